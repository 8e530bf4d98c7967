//! One loop per core: connections spread over the shards' SO_REUSEPORT
//! listeners, every shard serves, and the admin endpoint shows each
//! shard's share.

use crate::util;

use std::io::Write;
use std::time::Duration;

use util::{Server, frame, read_frame};

#[test]
fn two_shards_share_the_connections_and_both_serve() {
    let server = Server::start(&["--threads", "2", "--protocol", "frame"]);
    // The kernel spreads connections over the listeners by a hash of the
    // 4-tuple: with 40 of them, both shards get some unless the hash is
    // broken (2 × 2^-40 by chance).
    let mut clients: Vec<_> = (0..40).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let payload = format!("client {i}").into_bytes();
        client.write_all(&frame(&payload)).unwrap();
        assert_eq!(read_frame(client), payload);
    }
    let scrape = server.scrape();
    let per_shard: Vec<f64> = ["0", "1"]
        .iter()
        .map(|shard| util::metric(&scrape, "holdfast_connections_open", &[("shard", shard)]))
        .collect();
    assert_eq!(per_shard.iter().sum::<f64>(), 40.0, "{per_shard:?}");
    assert!(per_shard.iter().all(|&open| open > 0.0), "{per_shard:?}");
    for shard in ["0", "1"] {
        assert!(
            util::metric(&scrape, "holdfast_frames_total", &[("shard", shard)]) > 0.0,
            "shard {shard} served no frame"
        );
    }
    drop(clients);
    server.wait_metric(
        "holdfast_connections_open",
        &[],
        0.0,
        Duration::from_secs(2),
    );
}
