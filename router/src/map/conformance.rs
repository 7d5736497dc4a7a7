//! What every `MapStore` must do, run on each implementation: of racing edits exactly one
//! wins and none is lost, versions have no gaps, a watcher sees every version in order, and
//! leases run out when not renewed and end when released. Each check gets two handles on the
//! same fresh, empty place, as two processes would have.

use super::{ClusterMap, MapStore, NodeEntry, edit, open_or_create};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub type Pair = (Arc<dyn MapStore>, Arc<dyn MapStore>);

/// Runs every check, each on a fresh pair from `make`.
pub async fn all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Pair>,
{
    creation_is_won_once(make().await).await;
    racing_installs_one_wins(make().await).await;
    racing_edits_all_land(make().await).await;
    a_watcher_sees_every_version(make().await).await;
    leases_run_out_and_end(make().await).await;
}

fn with_node(m: &ClusterMap, id: &str) -> ClusterMap {
    let mut next = m.clone();
    next.nodes.insert(
        id.to_string(),
        NodeEntry {
            url: format!("http://{id}"),
            draining: false,
        },
    );
    next
}

pub async fn creation_is_won_once((a, b): Pair) {
    assert_eq!(a.current().await.unwrap(), None);
    let (ma, mb) = tokio::join!(
        open_or_create(a.as_ref(), ClusterMap::initial(4)),
        open_or_create(b.as_ref(), ClusterMap::initial(4))
    );
    let (ma, mb) = (ma.unwrap(), mb.unwrap());
    assert_eq!(ma, mb, "both creators answer the winner's map");
    assert_eq!(ma.version, 1);
    assert_eq!(a.current().await.unwrap(), Some(ma.clone()));
    assert_eq!(b.version(1).await.unwrap(), Some(ma));
    assert_eq!(b.version(2).await.unwrap(), None);
}

pub async fn racing_installs_one_wins((a, b): Pair) {
    let m = open_or_create(a.as_ref(), ClusterMap::initial(2))
        .await
        .unwrap();
    let mut x = with_node(&m, "x");
    let mut y = with_node(&m, "y");
    x.version = 2;
    y.version = 2;
    let (wx, wy) = tokio::join!(a.install(&x), b.install(&y));
    assert!(
        wx.unwrap() ^ wy.unwrap(),
        "exactly one of two edits to version 2 wins"
    );
    let now = b.current().await.unwrap().unwrap();
    assert_eq!(now.version, 2);
    assert!(now == x || now == y);
    // A stale edit, a repeated one and one that would leave a gap are all refused.
    assert!(!a.install(&x).await.unwrap());
    let mut gap = with_node(&now, "z");
    gap.version = 4;
    assert!(!b.install(&gap).await.unwrap());
    assert_eq!(a.current().await.unwrap().unwrap().version, 2);
    assert_eq!(a.version(4).await.unwrap(), None);
}

pub async fn racing_edits_all_land((a, b): Pair) {
    open_or_create(a.as_ref(), ClusterMap::initial(3))
        .await
        .unwrap();
    let edits = (0..8).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move {
            edit(store.as_ref(), |m| Ok(Some(with_node(m, &format!("n{i}")))))
                .await
                .unwrap()
        }
    });
    futures::future::join_all(edits).await;
    let m = a.current().await.unwrap().unwrap();
    assert_eq!(m.version, 9, "each edit installed one version");
    assert_eq!(
        m.nodes.len(),
        8,
        "no edit lost another's: {:?}",
        m.nodes.keys()
    );
}

pub async fn a_watcher_sees_every_version((a, b): Pair) {
    let m = open_or_create(a.as_ref(), ClusterMap::initial(1))
        .await
        .unwrap();
    assert_eq!(
        b.next(m.version, Duration::from_millis(200)).await.unwrap(),
        None,
        "no newer version: nothing, after the wait"
    );
    let watcher = tokio::spawn({
        let b = b.clone();
        async move {
            let mut seen = 1;
            let mut got = Vec::new();
            while seen < 21 {
                let next = b
                    .next(seen, Duration::from_secs(20))
                    .await
                    .unwrap()
                    .expect("a version within the wait");
                got.push(next.version);
                seen = next.version;
            }
            got
        }
    });
    for i in 0..20 {
        edit(a.as_ref(), |m| Ok(Some(with_node(m, &format!("w{i}")))))
            .await
            .unwrap();
    }
    assert_eq!(watcher.await.unwrap(), (2..=21).collect::<Vec<u64>>());
}

pub async fn leases_run_out_and_end((a, b): Pair) {
    let ttl = Duration::from_secs(1);
    assert!(
        !b.alive("never").await.unwrap(),
        "a node that never renewed"
    );
    a.renew("kept", ttl).await.unwrap();
    a.renew("lapsed", ttl).await.unwrap();
    a.renew("released", ttl).await.unwrap();
    for n in ["kept", "lapsed", "released"] {
        assert!(b.alive(n).await.unwrap(), "{n} just renewed");
    }
    a.release("released").await.unwrap();
    assert!(
        !b.alive("released").await.unwrap(),
        "a released lease ends at once"
    );
    // `kept` renews every third of its lease; `lapsed` stops.
    let deadline = tokio::time::Instant::now() + ttl * 4;
    let mut lapsed_at = None;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(ttl / 3).await;
        a.renew("kept", ttl).await.unwrap();
        assert!(b.alive("kept").await.unwrap(), "a renewed lease holds");
        if lapsed_at.is_none() && !b.alive("lapsed").await.unwrap() {
            lapsed_at = Some(tokio::time::Instant::now());
        }
    }
    assert!(
        lapsed_at.is_some(),
        "a lease not renewed runs out within four leases"
    );
    // A node whose lease ran out renews anew.
    a.renew("lapsed", ttl).await.unwrap();
    assert!(b.alive("lapsed").await.unwrap());
}
