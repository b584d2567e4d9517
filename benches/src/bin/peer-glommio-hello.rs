//! Hello peer on stock glommio 0.9: one `LocalExecutor` pinned to the CPU this process may run
//! on, a hand-rolled HTTP/1.1 responder (httparse framing, keep-alive, pipelining) that writes
//! every response a read completed in one write.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use subzero::config::allowed_cpus;
use subzero_benches::{frame_requests, install_stop_handler, stop_requested, HELLO_RESPONSE};

/// Hello responder on stock glommio.
#[derive(Parser, Debug)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:9003.
    #[arg(long)]
    listen: SocketAddr,
}

/// Read buffer per connection; a request head must fit (see `REQUEST_HEAD_BYTES_MAX`).
const READ_BUFFER_LEN: usize = 64 * 1024;
/// How often the stop watcher looks at the signal flag.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(100);

async fn serve_connection(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0_u8; READ_BUFFER_LEN];
    let mut n_filled = 0;
    let mut out = Vec::with_capacity(HELLO_RESPONSE.len() * 16);
    loop {
        let n_read = match stream.read(&mut buf[n_filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n_read) => n_read,
        };
        n_filled += n_read;
        let Ok((n_requests, n_consumed)) = frame_requests(&buf[..n_filled]) else {
            return;
        };
        buf.copy_within(n_consumed..n_filled, 0);
        n_filled -= n_consumed;
        if n_requests == 0 {
            continue;
        }
        out.clear();
        for _ in 0..n_requests {
            out.extend_from_slice(HELLO_RESPONSE);
        }
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).map_err(std::io::Error::from)?;
    eprintln!(
        "listening on {}",
        listener.local_addr().map_err(std::io::Error::from)?
    );
    glommio::spawn_local(async {
        while !stop_requested() {
            glommio::timer::sleep(STOP_POLL_INTERVAL).await;
        }
        std::process::exit(0);
    })
    .detach();
    loop {
        // Accept errors (out of fds, a reset before accept) do not stop the server.
        if let Ok(stream) = listener.accept().await {
            glommio::spawn_local(serve_connection(stream)).detach();
        }
    }
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    install_stop_handler()?;
    let cpu = allowed_cpus()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no CPU in this process's affinity mask"))?;
    let executor = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("peer-glommio-hello")
        .make()
        .map_err(std::io::Error::from)?;
    executor.run(serve(args.listen))
}
