//! `subzero serve`: builds listeners, the mesh, the control plane and one pinned shard per core,
//! then waits for SIGINT/SIGTERM and shuts down gracefully.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use crate::api::{AppShared, ShardApp, ShardLinks};
use crate::auth::{BatchMode, KeyRing, TrustedIssuer, Verifier};
use crate::authz;
use crate::config::{allowed_cpus, Config};
use crate::control::{ControlLinks, ControlPlane, ControlState, CONTROL_QUEUE_DEPTH};
use crate::gate::Gate;
use crate::monitor::Board;
use crate::plane::Denylist;
use crate::plane::{ControlMsg, KeySnapshot, ShardMsg};
use crate::shard::mesh::{Inbox, Mesh, Outbox};
use crate::shard::{self, RuntimeStats, ShardLimits};
use crate::store::{self, RedbStore, Shared, Store, StoreOptions};

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be created or used.
    #[error(
        "cannot use data directory {path}: {source}; check its permissions or pass --data-dir"
    )]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Keys could not be loaded or generated.
    #[error(transparent)]
    Keys(#[from] crate::auth::KeyError),
    /// The shipped prompt-injection phrase set does not build (a packaging fault).
    #[error("cannot build the threat detectors: {0}")]
    Detectors(#[from] crate::security::PatternError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; is another process using it? choose another with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The Unix-socket listener could not be set up.
    #[error("cannot listen on unix:{path}: {source}")]
    BindUnix {
        /// The socket path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The embedded store could not be opened or read.
    #[error("cannot open the store {}: {source}; restore it from a backup (the server does not start on a damaged store)", path.display())]
    Store {
        /// The store file (`subzero.redb` in the data directory).
        path: std::path::PathBuf,
        /// What went wrong.
        source: crate::store::StoreError,
    },
    /// Stored relationships do not fit the configured schema.
    #[error("stored relationships do not fit [permissions] schema_file: {0}; fix the schema or delete those relationships")]
    Relationships(String),
    /// The vault master key could not be loaded or created.
    #[error(transparent)]
    MasterKey(#[from] crate::vault::MasterKeyError),
    /// The store holds sealed vault entries but the master key file is gone.
    #[error("{} is missing but the store holds {n_entries} sealed vault entries; restore it from a backup (a new key cannot open them)", path.display())]
    MasterKeyMissing {
        /// The expected key file.
        path: std::path::PathBuf,
        /// Sealed entries in the store.
        n_entries: usize,
    },
    /// The master key file does not open the sealed vault entries (replaced or damaged).
    #[error("{} does not open the {n_entries} sealed vault entries in the store (the key was replaced or damaged); restore it from a backup", path.display())]
    MasterKeyWrong {
        /// The key file.
        path: std::path::PathBuf,
        /// Sealed entries in the store.
        n_entries: usize,
    },
    /// The audit log could not be opened, or it is damaged (the message names the file and
    /// the record).
    #[error("{0}; the server does not start on a damaged audit log")]
    Audit(#[from] crate::audit::AuditError),
    /// A runtime resource (eventfd, io_uring, thread) could not be created.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs the gateway until SIGINT or SIGTERM.
pub fn serve(config: Config) -> Result<(), ServeError> {
    exit_on_any_panic();
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown)).map_err(ServeError::Runtime)?;
    }
    run(config, &shutdown, |addr, unix| match (addr, unix) {
        (Some(addr), _) => tracing::info!("listening on {addr}"),
        (None, Some(path)) => tracing::info!("listening on unix:{} only", path.display()),
        (None, None) => {}
    })
}

/// Exit status of a `subzero serve` process in which a thread panicked.
pub const PANIC_EXIT_CODE: i32 = 101;

/// A panic in any thread of `subzero serve` ends the process at once with
/// [`PANIC_EXIT_CODE`] after the panic message and one error line. Without it a shard that
/// panics in a build that unwinds would leave the others serving (and `join_shards` waiting on
/// them) with part of the state gone; release builds abort on panic anyway, and this makes both
/// profiles end the same way, with an exit code rather than a signal. Nothing is lost that was
/// acknowledged: every `200` for a durable write follows its `fdatasync`, as for `kill -9`.
fn exit_on_any_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            code = PANIC_EXIT_CODE,
            "a thread panicked: subzero exits rather than serve with part of itself gone"
        );
        // SAFETY: `_exit` takes no pointers and ends the process without running exit
        // handlers or unwinding other threads, which may hold state the panic left half-updated.
        unsafe { libc::_exit(PANIC_EXIT_CODE) };
    }));
}

/// Runs until `shutdown` is set; `on_ready` gets the bound TCP address (`None` for a Unix-only
/// server) and the Unix socket's path once every shard runs.
pub fn run(
    config: Config,
    shutdown: &Arc<AtomicBool>,
    on_ready: impl FnOnce(Option<SocketAddr>, Option<&std::path::Path>),
) -> Result<(), ServeError> {
    let (mut state, fleet) = load_control_state(&config)?;
    let revoked = state.revocations.clone();

    let n_shards = config.shard_count();
    let mut config = config;
    let (unix, listeners) = bind_listeners(&mut config, n_shards)?;
    let unix_fd = unix.as_ref().map(|u| Arc::clone(&u.fd));
    let listener_fds: Vec<RawFd> = listeners.iter().flatten().map(AsRawFd::as_raw_fd).collect();
    state.gate = Gate::start(&config.gate, &listener_fds);

    let Mesh {
        shards: shard_ports,
        control: control_outbox,
        fleet: fleet_outbox,
        gauges: mesh_gauges,
        wakers,
    } = Mesh::<ShardMsg>::build(n_shards).map_err(ServeError::Runtime)?;
    let board = Arc::new(Board::new(n_shards));
    let config = Arc::new(config);
    let mut control = ControlPlane::new(
        Arc::clone(&config),
        state,
        ControlLinks {
            outbox: control_outbox,
            board: Arc::clone(&board),
            shutdown: Arc::clone(shutdown),
        },
    );
    // In a fleet: the other nodes' keys and the fleet's blocks before the first request.
    control.join_fleet();
    let keys = control.key_snapshot();
    let relationships = control.relationships();
    let (control_tx, control_rx) = sync_channel(CONTROL_QUEUE_DEPTH);
    let fleet_thread = spawn_fleet_thread(&config, fleet.as_ref(), &control_tx, shutdown)?;
    let (lease_tx, lease_thread) = spawn_lease_thread(&config, fleet_outbox, shutdown)?;
    let shared = Arc::new(AppShared {
        config: Arc::clone(&config),
        mesh_gauges,
        board,
        detectors: crate::security::Detectors::embedded()?,
    });

    let cpus = allowed_cpus();
    let limits = config.server.limits.clone();
    let mut threads = Vec::with_capacity(n_shards + 1);
    let control_thread = {
        std::thread::Builder::new()
            .name("sz-control".into())
            .spawn(move || control.run(&control_rx))
            .map_err(ServeError::Runtime)?
    };
    let cache_seed: u64 = rand::random();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    for (idx, (listener, (outbox, inbox))) in listeners.into_iter().zip(shard_ports).enumerate() {
        let seed = ShardSeed {
            idx,
            cpu: cpus[idx % cpus.len()],
            listener: shard::Listeners {
                tcp: listener,
                unix: unix_fd.clone(),
            },
            shared: Arc::clone(&shared),
            control_tx: control_tx.clone(),
            lease_tx: lease_tx.clone(),
            keys: Arc::clone(&keys),
            relationships: relationships.clone(),
            revoked: revoked.clone(),
            limits: limits.clone(),
            outbox,
            inbox,
            cache_seed: cache_seed ^ idx as u64,
            ready: ready_tx.clone(),
        };
        threads.push(spawn_shard(seed, Arc::clone(shutdown))?);
    }
    drop(control_tx);
    drop(lease_tx);
    drop(ready_tx);
    // "Listening" only once every shard has built its state (a large cache takes a moment):
    // a client that connects then is answered at once. A shard that dies first ends the wait.
    let n_ready = ready_rx.iter().take(n_shards).count();
    if n_ready == n_shards {
        tracing::info!(shards = n_shards, ?cpus, "subzero started");
        on_ready(config.server.listen, config.server.unix_socket.as_deref());
    }

    let result = join_shards(threads, shutdown, &wakers);
    shutdown.store(true, Ordering::Relaxed);
    let _ = control_thread.join();
    for thread in [fleet_thread, lease_thread].into_iter().flatten() {
        let _ = thread.join();
    }
    drop(unix_fd);
    drop(unix); // removes the socket file
    tracing::info!("subzero stopped");
    result
}

/// Everything the control plane owns, loaded from the data dir (and the fleet); the gate is
/// started later, once the listeners are bound.
fn load_control_state(config: &Config) -> Result<(ControlState, Option<FleetStart>), ServeError> {
    let now_s = crate::unix_now_s();
    let (keyring, verifier) = load_state(config, now_s)?;
    let Stored {
        store,
        relationships,
        channels,
        revocations,
        fleet,
    } = load_store(config, now_s)?;
    let vault = load_vault(config, store.as_ref())?;
    let audit = load_audit(config)?;
    let state = ControlState {
        keyring,
        base_verifier: verifier,
        revocations,
        store,
        relationships,
        channels,
        vault,
        gate: Gate::off(),
        audit,
        fleet: fleet
            .as_ref()
            .map(|f| (f.node_id.clone(), Arc::clone(&f.gauges))),
    };
    Ok((state, fleet))
}

/// Waits for every shard thread; the first that fails stops the others (and the server).
fn join_shards(
    threads: Vec<std::thread::JoinHandle<std::io::Result<()>>>,
    shutdown: &AtomicBool,
    wakers: &crate::shard::mesh::Wakers,
) -> Result<(), ServeError> {
    let mut result = Ok(());
    for handle in threads {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "shard failed");
                shutdown.store(true, Ordering::Relaxed);
                wakers.wake_all();
                result = Err(ServeError::Runtime(e));
            }
            Err(_) => {
                shutdown.store(true, Ordering::Relaxed);
                wakers.wake_all();
                result = Err(ServeError::Runtime(std::io::Error::other("shard panicked")));
            }
        }
    }
    result
}

/// What the store holds at start, ready for the control plane and the shards.
struct Stored {
    store: Box<dyn Store>,
    /// The relationship snapshot every shard shares; `None` without a schema.
    relationships: Option<Arc<authz::Snapshot>>,
    channels: crate::control::Channels,
    revocations: Denylist,
    /// In a fleet: the node's name, gauges, and the Stream id its copy is at.
    fleet: Option<FleetStart>,
}

/// In a fleet, the thread that tails the feed and wakes the control plane.
fn spawn_fleet_thread(
    config: &Config,
    fleet: Option<&FleetStart>,
    control_tx: &std::sync::mpsc::SyncSender<crate::plane::ControlMsg>,
    shutdown: &Arc<AtomicBool>,
) -> Result<Option<std::thread::JoinHandle<()>>, ServeError> {
    let (Some(fleet_config), Some(f)) = (&config.fleet, fleet) else {
        return Ok(None);
    };
    let handle = crate::fleet::spawn_tail(
        fleet_config,
        f.start,
        control_tx.clone(),
        Arc::clone(&f.gauges),
        Arc::clone(shutdown),
    )
    .map_err(ServeError::Runtime)?;
    Ok(Some(handle))
}

/// In a fleet with key rules, the lease thread and the sender every shard asks it on.
#[allow(
    clippy::type_complexity,
    reason = "a pair of optional ends, named at the one call site"
)]
fn spawn_lease_thread(
    config: &Config,
    outbox: Outbox<ShardMsg>,
    shutdown: &Arc<AtomicBool>,
) -> Result<
    (
        Option<std::sync::mpsc::SyncSender<crate::plane::LeaseRequest>>,
        Option<std::thread::JoinHandle<()>>,
    ),
    ServeError,
> {
    let rules = &config.ratelimit.key_rules;
    let Some(fleet) = config.fleet.as_ref().filter(|_| !rules.is_empty()) else {
        return Ok((None, None));
    };
    let (tx, rx) = sync_channel(crate::fleet::MAX_LEASE_QUEUE);
    let handle = crate::fleet::spawn_lease_thread(fleet, rules, rx, outbox, Arc::clone(shutdown))
        .map_err(ServeError::Runtime)?;
    Ok((Some(tx), Some(handle)))
}

/// What the fleet's threads start from.
struct FleetStart {
    node_id: String,
    gauges: Arc<crate::fleet::FleetGauges>,
    start: crate::fleet::StreamId,
}

/// Wraps the local store as a fleet node's copy and pulls what the fleet holds, so the
/// mirrors built next start from the fleet's state. Redis being unreachable is not fatal: the
/// node serves from its copy and catches up once Redis answers.
fn join_fleet_store(
    config: &Config,
    fleet: &crate::config::FleetConfig,
    local: RedbStore,
    now_s: u64,
) -> Result<(Box<dyn Store>, FleetStart), ServeError> {
    let data_dir = &config.server.data_dir;
    let node_id =
        crate::fleet::node_id(fleet.node_id.as_deref(), data_dir).map_err(ServeError::Runtime)?;
    let gauges = Arc::new(crate::fleet::FleetGauges::default());
    let mut store =
        crate::fleet::FleetStore::new(local, fleet, node_id.clone(), Arc::clone(&gauges)).map_err(
            |source| ServeError::Store {
                path: data_dir.join(store::STORE_FILE),
                source,
            },
        )?;
    match store.pull(now_s) {
        Ok(()) => tracing::info!(node = %node_id, revision = store.revision(), "fleet: joined"),
        Err(e) => {
            tracing::warn!(node = %node_id, error = %e, "fleet: Redis unreachable at start; serving from the local copy until it answers");
        }
    }
    // Records are read from the store next; keys and blocks go to the control plane.
    store.keep_events_only();
    let start = store.stream_id();
    Ok((
        Box::new(store),
        FleetStart {
            node_id,
            gauges,
            start,
        },
    ))
}

/// The embedded store in the data dir, and the relationship snapshot built from it when a
/// schema is configured.
fn load_store(config: &Config, now_s: u64) -> Result<Stored, ServeError> {
    let data_dir = &config.server.data_dir;
    let store_error = |source| ServeError::Store {
        path: data_dir.join(store::STORE_FILE),
        source,
    };
    let mut store = RedbStore::open(data_dir, StoreOptions::default()).map_err(store_error)?;
    // Revocations of an older version lived in `revocations.log`: taken over once, as ours.
    let imported = store::import_revocation_log(&mut store, data_dir, &config.auth.issuer, now_s)
        .map_err(store_error)?;
    if let Some(imported) = imported {
        tracing::info!(?imported, "revocations.log imported into the store");
    }
    let (store, fleet): (Box<dyn Store>, _) = if let Some(fleet) = &config.fleet {
        let (store, start) = join_fleet_store(config, fleet, store, now_s)?;
        (store, Some(start))
    } else {
        (Box::new(store), None)
    };
    let stored = store.snapshot().map_err(store_error)?;
    let channels = stored.state.channels.clone().into_iter().collect();
    let mut revocations = Denylist::default();
    for (key, &exp_s) in &stored.state.revocations {
        if exp_s > now_s {
            revocations.insert(key.iss.clone(), key.jti.clone(), exp_s);
        }
    }
    let Some(schema) = &config.permissions else {
        return Ok(Stored {
            store,
            relationships: None,
            channels,
            revocations,
            fleet,
        });
    };
    let limits = authz::Limits::default();
    let changes = stored
        .state
        .tuples
        .iter()
        .map(|(t, expires_at)| {
            let text = authz::TupleText {
                object: t.object.clone(),
                relation: t.relation.clone(),
                subject: t.subject.clone(),
                expires_at: *expires_at,
            };
            let resolved = text.resolve(schema, &limits);
            resolved
                .map(authz::Change::Touch)
                .map_err(|e| format!("{text}: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()
        .map_err(ServeError::Relationships)?;
    let snapshot = authz::Snapshot::empty(schema, rand::random(), 0)
        .apply(schema, &changes, &limits)
        .map_err(|e| ServeError::Relationships(e.to_string()))?
        .at_revision(stored.revision);
    tracing::info!(
        tuples = snapshot.len(),
        revision = stored.revision,
        "relationships loaded"
    );
    Ok(Stored {
        store,
        relationships: Some(Arc::new(snapshot)),
        channels,
        revocations,
        fleet,
    })
}

/// The audit log, recovered; its personal fields are sealed with a key derived from the vault
/// master key (HKDF, its own `info`).
fn load_audit(config: &Config) -> Result<crate::audit::AuditLog, ServeError> {
    let data_dir = &config.server.data_dir;
    let master_key = crate::vault::load_or_create_master_key(data_dir)?;
    let pii_key = master_key
        .purpose_key(crate::audit::PII_KEY_INFO)
        .map_err(|e| ServeError::Runtime(std::io::Error::other(e.to_string())))?;
    let log = crate::audit::AuditLog::open(
        data_dir,
        &config.audit,
        crate::audit::PiiKey::new(&pii_key),
        crate::unix_now_ms(),
    )?;
    tracing::info!(
        last_seq = log.last_seq(),
        checkpoint_key = %log.verifier().to_vkey(),
        "audit log opened"
    );
    Ok(log)
}

/// The vault master key (created on first start) and the sealed entries in the store.
fn load_vault(config: &Config, store: &dyn Store) -> Result<crate::control::Vault, ServeError> {
    let data_dir = &config.server.data_dir;
    let stored = store.snapshot().map_err(|source| ServeError::Store {
        path: data_dir.join(crate::store::STORE_FILE),
        source,
    })?;
    let n_entries = stored.state.vault.len();
    let fleet_key = config.fleet.as_ref().and_then(|f| f.vault_key_file.clone());
    let (key_path, master_key) = if let Some(path) = fleet_key {
        // Every node of the fleet opens every entry with the one key the operator shares.
        let key = crate::vault::load_master_key(&path)?;
        (path, key)
    } else {
        let key_path = data_dir.join(crate::vault::MASTER_KEY_FILE);
        if n_entries > 0 && std::fs::symlink_metadata(&key_path).is_err() {
            return Err(ServeError::MasterKeyMissing {
                path: key_path,
                n_entries,
            });
        }
        (key_path, crate::vault::load_or_create_master_key(data_dir)?)
    };
    let vault = crate::control::Vault::new(master_key, stored.state.vault);
    if !vault.master_key_opens_entries() {
        return Err(ServeError::MasterKeyWrong {
            path: key_path,
            n_entries,
        });
    }
    tracing::info!(entries = n_entries, "vault loaded");
    Ok(vault)
}

/// Data dir, key ring (generated on first start), verifier and revocation log.
fn load_state(config: &Config, now_s: u64) -> Result<(KeyRing, Verifier), ServeError> {
    let data_dir = config.server.data_dir.clone();
    create_private_dir(&data_dir).map_err(|source| ServeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let (keyring, created) = KeyRing::load_or_generate(&data_dir, now_s)?;
    if created {
        tracing::info!(
            kid = keyring.current_kid(),
            "generated a new signing key in {}",
            data_dir.display()
        );
    }
    let mut verifier = Verifier::own(
        &keyring,
        &config.auth.issuer,
        config.auth.audiences.clone(),
        config.auth.leeway_s,
    );
    if !config.auth.strict_batch {
        verifier.set_batch_mode(BatchMode::Fast);
    }
    for issuer in &config.auth.trusted_issuers {
        verifier.add_trusted_issuer(
            TrustedIssuer {
                issuer: issuer.issuer.clone(),
                jwks_path: issuer.jwks_file.clone(),
                audiences: issuer.audiences.clone(),
            },
            now_s,
        )?;
    }
    Ok((keyring, verifier))
}

/// Everything one shard thread starts from.
struct ShardSeed {
    idx: usize,
    cpu: usize,
    listener: shard::Listeners,
    shared: Arc<AppShared>,
    control_tx: std::sync::mpsc::SyncSender<ControlMsg>,
    lease_tx: Option<std::sync::mpsc::SyncSender<crate::plane::LeaseRequest>>,
    keys: Arc<KeySnapshot>,
    relationships: Option<Arc<crate::authz::Snapshot>>,
    revoked: Denylist,
    limits: ShardLimits,
    outbox: Outbox<ShardMsg>,
    inbox: Inbox<ShardMsg>,
    cache_seed: u64,
    /// Told once the shard's state is built.
    ready: std::sync::mpsc::Sender<()>,
}

/// Starts a pinned shard thread; its handler is built on that thread.
fn spawn_shard(
    seed: ShardSeed,
    shutdown: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<std::io::Result<()>>, ServeError> {
    std::thread::Builder::new()
        .name(format!("sz-shard-{}", seed.idx))
        .spawn(move || {
            let ShardSeed {
                idx,
                cpu,
                listener,
                shared,
                control_tx,
                lease_tx,
                keys,
                relationships,
                revoked,
                limits,
                outbox,
                inbox,
                cache_seed,
                ready,
            } = seed;
            if !shard::pin_to_cpu(cpu) {
                tracing::warn!(shard = idx, cpu, "could not pin shard thread");
            }
            let stats = Arc::new(RuntimeStats::default());
            let links = ShardLinks {
                control: control_tx,
                outbox,
                runtime: Arc::clone(&stats),
                lease: lease_tx,
            };
            let app = ShardApp::new(idx, shared, links, keys, revoked, cache_seed);
            let app = app.with_relationships(relationships);
            let _ = ready.send(());
            drop(ready);
            panic_if_told(idx);
            let result = shard::run_shard(idx, listener, limits, inbox, stats, &shutdown, app);
            if result.is_err() {
                // One failed shard stops the server rather than leaving it half up.
                shutdown.store(true, Ordering::Relaxed);
            }
            result
        })
        .map_err(ServeError::Runtime)
}

/// Test hook, compiled only into debug builds (`cfg(debug_assertions)`; the release binary
/// users run has no such knob): `SUBZERO_TEST_PANIC_SHARD=N` makes shard `N` panic once it is
/// ready, so an end-to-end test can watch the process go down. An env variable rather than a
/// cargo feature keeps the tests on the one binary `cargo test` builds.
fn panic_if_told(idx: usize) {
    #[cfg(debug_assertions)]
    {
        let told = std::env::var("SUBZERO_TEST_PANIC_SHARD")
            .ok()
            .and_then(|v| v.parse::<usize>().ok());
        assert!(
            told != Some(idx),
            "SUBZERO_TEST_PANIC_SHARD={idx}: injected shard panic"
        );
    }
    #[cfg(not(debug_assertions))]
    let _ = idx;
}

/// Binds the Unix socket (if any), then each shard's TCP listener (if any; `None` for every
/// shard of a Unix-only server), and records the bound TCP address (port 0 resolved: the
/// default `public_url` is built from it) in `config`. The Unix socket goes first: its guard
/// removes the file if any later step of the start fails, the TCP bind included.
fn bind_listeners(
    config: &mut Config,
    n_shards: usize,
) -> Result<(Option<BoundUnix>, Vec<Option<OwnedFd>>), ServeError> {
    let unix = bind_unix(&config.server)?;
    let Some(listen) = config.server.listen else {
        return Ok((unix, (0..n_shards).map(|_| None).collect()));
    };
    let listeners = bind_all(listen, n_shards)?;
    config.server.listen = Some(shard::local_addr(&listeners[0]).map_err(ServeError::Runtime)?);
    Ok((unix, listeners.into_iter().map(Some).collect()))
}

/// The bound Unix-socket listener (shared by every shard). Dropping it removes the socket
/// file, so a start that fails after the bind leaves no file behind, and neither does a stop.
struct BoundUnix {
    path: std::path::PathBuf,
    fd: Arc<OwnedFd>,
}

impl Drop for BoundUnix {
    fn drop(&mut self) {
        shard::remove_unix_socket(&self.path);
    }
}

/// Binds the configured Unix-socket listener (shared by every shard), if any.
fn bind_unix(server: &crate::config::ServerConfig) -> Result<Option<BoundUnix>, ServeError> {
    let Some(path) = &server.unix_socket else {
        return Ok(None);
    };
    let err = |source| ServeError::BindUnix {
        path: path.display().to_string(),
        source,
    };
    let gid = match &server.unix_group {
        Some(name) => Some(
            shard::group_id(name)
                .ok_or_else(|| err(std::io::Error::other(format!("no group named {name:?}"))))?,
        ),
        None => None,
    };
    let fd = shard::bind_unix_listener(path, server.unix_mode, gid).map_err(err)?;
    tracing::info!("accepting on unix:{}", path.display());
    Ok(Some(BoundUnix {
        path: path.clone(),
        fd: Arc::new(fd),
    }))
}

fn bind_all(listen: SocketAddr, n_shards: usize) -> Result<Vec<OwnedFd>, ServeError> {
    let first = shard::bind_listener(listen, 4096).map_err(|source| ServeError::Bind {
        addr: listen,
        source,
    })?;
    // Port 0 resolves on the first bind; the other shards join that port.
    let bound = shard::local_addr(&first).map_err(ServeError::Runtime)?;
    let mut listeners = vec![first];
    for _ in 1..n_shards {
        listeners.push(
            shard::bind_listener(bound, 4096).map_err(|source| ServeError::Bind {
                addr: bound,
                source,
            })?,
        );
    }
    Ok(listeners)
}

fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
