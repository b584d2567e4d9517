//! Typed handles on the gate's five maps, opened from a fresh load or from the pins; blocklist and counter operations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use aya::maps::{lpm_trie::Key, Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray};
use subzero_common::{
    BlockEntry, BlockReason, GateParams, RateEntry, RateKey, Reason, MAP_BLOCK_V4, MAP_BLOCK_V6,
    MAP_CONFIG, MAP_COUNTERS, MAP_RATE, MAX_RATE_ENTRIES, N_REASONS,
};

use super::{Cidr, GateError};

/// Upper bound on entries read back from one map in one call (the map sizes, rounded up).
const MAX_ITER: usize = 1 << 18;

/// One blocklist entry as userspace sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockItem {
    /// The blocked network.
    pub cidr: Cidr,
    /// Why it was blocked.
    pub reason: BlockReason,
    /// `CLOCK_BOOTTIME` ns after which it stops blocking; 0 = forever.
    pub until_ns: u64,
    /// Packets it dropped (approximate).
    pub drops: u64,
}

/// One tracked source in `SZ_RATE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateItem {
    /// Source address (v4-mapped addresses shown as IPv4).
    pub addr: IpAddr,
    /// Packets dropped by its buckets.
    pub drops: u64,
    /// Last packet seen, `CLOCK_BOOTTIME` ns.
    pub last_ns: u64,
}

/// The gate's maps, owned.
pub struct GateMaps {
    pub(crate) block_v4: LpmTrie<MapData, [u8; 4], BlockEntry>,
    pub(crate) block_v6: LpmTrie<MapData, [u8; 16], BlockEntry>,
    pub(crate) rate: HashMap<MapData, RateKey, RateEntry>,
    pub(crate) counters: PerCpuArray<MapData, u64>,
    pub(crate) config: Array<MapData, GateParams>,
}

fn map_err(op: &'static str) -> impl Fn(MapError) -> GateError {
    move |source| GateError::Map {
        op,
        source: Box::new(source),
    }
}

impl GateMaps {
    /// Takes the maps out of a loaded object. `pin_dir`, when given, pins each map there first.
    pub(crate) fn from_ebpf(
        ebpf: &mut aya::Ebpf,
        pin_dir: Option<&Path>,
    ) -> Result<GateMaps, GateError> {
        let mut take = |name: &'static str| -> Result<Map, GateError> {
            let map = ebpf.take_map(name).ok_or(GateError::MissingMap { name })?;
            if let Some(dir) = pin_dir {
                let path = dir.join(name);
                map.pin(&path).map_err(|e| GateError::Pin {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
            Ok(map)
        };
        let block_v4 = take(MAP_BLOCK_V4)?;
        let block_v6 = take(MAP_BLOCK_V6)?;
        let rate = take(MAP_RATE)?;
        let counters = take(MAP_COUNTERS)?;
        let config = take(MAP_CONFIG)?;
        Ok(GateMaps {
            block_v4: LpmTrie::try_from(block_v4).map_err(map_err("open SZ_BLOCK_V4"))?,
            block_v6: LpmTrie::try_from(block_v6).map_err(map_err("open SZ_BLOCK_V6"))?,
            rate: HashMap::try_from(rate).map_err(map_err("open SZ_RATE"))?,
            counters: PerCpuArray::try_from(counters).map_err(map_err("open SZ_COUNTERS"))?,
            config: Array::try_from(config).map_err(map_err("open SZ_CONFIG"))?,
        })
    }

    /// Opens the pinned maps under `dir`.
    pub(crate) fn from_pins(dir: &Path) -> Result<GateMaps, GateError> {
        let open = |name: &'static str| -> Result<Map, GateError> {
            let path = dir.join(name);
            if !path.exists() {
                return Err(GateError::NotPinned {
                    dir: dir.to_path_buf(),
                });
            }
            let data = MapData::from_pin(&path).map_err(map_err("open pinned map"))?;
            Map::from_map_data(data).map_err(map_err("open pinned map"))
        };
        Ok(GateMaps {
            block_v4: LpmTrie::try_from(open(MAP_BLOCK_V4)?)
                .map_err(map_err("open SZ_BLOCK_V4"))?,
            block_v6: LpmTrie::try_from(open(MAP_BLOCK_V6)?)
                .map_err(map_err("open SZ_BLOCK_V6"))?,
            rate: HashMap::try_from(open(MAP_RATE)?).map_err(map_err("open SZ_RATE"))?,
            counters: PerCpuArray::try_from(open(MAP_COUNTERS)?)
                .map_err(map_err("open SZ_COUNTERS"))?,
            config: Array::try_from(open(MAP_CONFIG)?).map_err(map_err("open SZ_CONFIG"))?,
        })
    }

    /// Writes the rate parameters the kernel side reads.
    pub fn set_params(&mut self, params: GateParams) -> Result<(), GateError> {
        self.config
            .set(0, params, 0)
            .map_err(map_err("write SZ_CONFIG"))
    }

    /// The rate parameters currently in the map.
    pub fn params(&self) -> Result<GateParams, GateError> {
        self.config.get(&0, 0).map_err(map_err("read SZ_CONFIG"))
    }

    /// Inserts or replaces the entry for `cidr` (its drop count restarts at 0).
    pub fn insert(
        &mut self,
        cidr: Cidr,
        reason: BlockReason,
        until_ns: u64,
    ) -> Result<(), GateError> {
        let entry = BlockEntry {
            until_ns,
            reason: reason as u32,
            pad: 0,
            drops: 0,
        };
        let res = match cidr {
            Cidr::V4 { addr, prefix_len } => {
                self.block_v4
                    .insert(&Key::new(u32::from(prefix_len), addr.octets()), entry, 0)
            }
            Cidr::V6 { addr, prefix_len } => {
                self.block_v6
                    .insert(&Key::new(u32::from(prefix_len), addr.octets()), entry, 0)
            }
        };
        res.map_err(|e| match &e {
            MapError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::ENOSPC) => {
                GateError::BlocklistFull
            }
            _ => GateError::Map {
                op: "insert blocklist entry",
                source: Box::new(e),
            },
        })
    }

    /// Removes the exact entry for `cidr`; `false` when there was none.
    pub fn remove(&mut self, cidr: Cidr) -> Result<bool, GateError> {
        let res = match cidr {
            Cidr::V4 { addr, prefix_len } => self
                .block_v4
                .remove(&Key::new(u32::from(prefix_len), addr.octets())),
            Cidr::V6 { addr, prefix_len } => self
                .block_v6
                .remove(&Key::new(u32::from(prefix_len), addr.octets())),
        };
        match res {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(e) => Err(GateError::Map {
                op: "remove blocklist entry",
                source: Box::new(e),
            }),
        }
    }

    /// Every blocklist entry, IPv4 first; at most `MAX_ITER` per family.
    pub fn entries(&self) -> Result<Vec<BlockItem>, GateError> {
        let mut out = Vec::new();
        for item in self.block_v4.iter().take(MAX_ITER) {
            let (key, e) = item.map_err(map_err("read SZ_BLOCK_V4"))?;
            let cidr = Cidr::new(
                IpAddr::V4(Ipv4Addr::from(key.data())),
                key.prefix_len() as u8,
            )
            .ok_or(GateError::Corrupt { map: MAP_BLOCK_V4 })?;
            out.push(BlockItem {
                cidr,
                reason: BlockReason::from_code(e.reason),
                until_ns: e.until_ns,
                drops: e.drops,
            });
        }
        for item in self.block_v6.iter().take(MAX_ITER) {
            let (key, e) = item.map_err(map_err("read SZ_BLOCK_V6"))?;
            let cidr = Cidr::new(
                IpAddr::V6(Ipv6Addr::from(key.data())),
                key.prefix_len() as u8,
            )
            .ok_or(GateError::Corrupt { map: MAP_BLOCK_V6 })?;
            out.push(BlockItem {
                cidr,
                reason: BlockReason::from_code(e.reason),
                until_ns: e.until_ns,
                drops: e.drops,
            });
        }
        Ok(out)
    }

    /// Removes entries whose `until_ns` has passed; returns how many went.
    pub fn expire(&mut self, now_ns: u64) -> Result<usize, GateError> {
        let expired: Vec<Cidr> = self
            .entries()?
            .into_iter()
            .filter(|b| b.until_ns != 0 && b.until_ns <= now_ns)
            .map(|b| b.cidr)
            .collect();
        let mut n_removed = 0;
        for cidr in expired {
            if self.remove(cidr)? {
                n_removed += 1;
            }
        }
        Ok(n_removed)
    }

    /// Per-CPU packet counts: `[cpu][reason]`.
    pub fn counters_per_cpu(&self) -> Result<Vec<[u64; N_REASONS as usize]>, GateError> {
        let mut per_cpu: Vec<[u64; N_REASONS as usize]> = Vec::new();
        for reason in Reason::ALL {
            let values = self
                .counters
                .get(&(reason as u32), 0)
                .map_err(map_err("read SZ_COUNTERS"))?;
            if per_cpu.len() < values.len() {
                per_cpu.resize(values.len(), [0; N_REASONS as usize]);
            }
            for (cpu, v) in values.iter().enumerate() {
                per_cpu[cpu][reason as usize] = *v;
            }
        }
        Ok(per_cpu)
    }

    /// Sources in `SZ_RATE` with at least one drop, most drops first, at most `max_n`.
    pub fn rate_offenders(&self, max_n: usize) -> Result<Vec<RateItem>, GateError> {
        let mut out = Vec::new();
        for item in self.rate.iter().take(MAX_RATE_ENTRIES as usize) {
            let (key, e) = item.map_err(map_err("read SZ_RATE"))?;
            if e.drops == 0 {
                continue;
            }
            let v6 = Ipv6Addr::from(key.addr);
            let addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
            out.push(RateItem {
                addr,
                drops: e.drops,
                last_ns: e.last_ns,
            });
        }
        out.sort_by_key(|r| std::cmp::Reverse(r.drops));
        out.truncate(max_n);
        Ok(out)
    }
}
