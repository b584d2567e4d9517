//! The fleet thread: blocks in `XREAD` on the feed with its own connection and wakes the
//! control plane when other nodes wrote, so a change reaches this node within a Redis round
//! trip instead of the control plane's next tick. It reads nothing into the node's state
//! itself: the control plane reads and applies entries, in order, on its own connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::Link;
use super::feed::{self, StreamId};
use super::FleetGauges;
use crate::config::FleetConfig;
use crate::plane::ControlMsg;

/// How long one `XREAD` blocks; bounds how long shutdown waits for this thread.
const BLOCK_MS: u64 = 250;

/// How often the fleet's head revision is read for the lag gauge.
const HEAD_EVERY: Duration = Duration::from_secs(1);

/// Starts the tailing thread from `start` (the Stream id this node has applied).
pub fn spawn_tail(
    config: &FleetConfig,
    start: StreamId,
    control: SyncSender<ControlMsg>,
    gauges: Arc<FleetGauges>,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // The read timeout must outlast the block.
    let read_timeout = Duration::from_millis(BLOCK_MS + config.io_timeout_ms);
    let mut link = Link::new(config, Some(read_timeout));
    std::thread::Builder::new()
        .name("sz-fleet".into())
        .spawn(move || {
            let mut cursor = start;
            let mut head_at = Instant::now();
            let mut was_up = false;
            while !shutdown.load(Ordering::Relaxed) {
                let Some(result) = link.call(|conn| feed::wait_after(conn, cursor, BLOCK_MS))
                else {
                    gauges.tail_connected.store(false, Ordering::Relaxed);
                    was_up = false;
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                };
                gauges.tail_connected.store(link.is_up(), Ordering::Relaxed);
                let newest = match result {
                    Ok(newest) => newest,
                    Err(e) => {
                        tracing::debug!(error = %e, "fleet: XREAD failed");
                        continue;
                    }
                };
                // New entries, or back after an outage (catch up on what was missed).
                if newest > cursor || !was_up {
                    cursor = newest;
                    match control.try_send(ControlMsg::FleetWake) {
                        Ok(()) | Err(TrySendError::Full(_)) => {}
                        Err(TrySendError::Disconnected(_)) => return,
                    }
                }
                was_up = true;
                if head_at.elapsed() >= HEAD_EVERY {
                    head_at = Instant::now();
                    if let Some(Ok(head)) = link.call(feed::head_rev) {
                        gauges.head_rev.store(head, Ordering::Relaxed);
                    }
                }
            }
        })
}
