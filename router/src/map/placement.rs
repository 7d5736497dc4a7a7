//! Which node should serve which shard: the edit any live node proposes when the map and the
//! leases disagree. A pure function of the map and of which nodes hold leases, so every node
//! proposes the same edit and the map's compare-and-swap lets one through.
//!
//! In order: a shard with no owner, or whose owner's lease ran out, goes to the least loaded
//! node at once (a failover: the new owner takes the database over, fencing the old one);
//! a shard whose move target died or is draining stays; a draining node's shards are asked
//! to move; then shards move from the most to the least loaded node while their counts differ
//! by more than one. A live owner is only ever asked to move (`moving_to`): it closes the
//! shard and installs the new owner itself, so two nodes never serve one shard at once.
//! Load is the count of shards a node has or is receiving. Once counts are even and nothing
//! moves, nodes are evened by weight: each shard's share of all the shards' bytes plus its
//! share of all their calls (as owners report them, `ShardLoad`). The heaviest node gives
//! its lightest node a shard, or swaps one with it where counts are equal, only if that
//! brings the heavier of the two down by a fifth, so a small difference moves nothing. A
//! shard with a plan (a split or merge under way) is not moved to balance, and the right
//! shard of a merge is moved to the left one's owner, who carries the merge out.

use super::resharding::merging_with;
use super::{ClusterMap, NodeId, Plan, ShardEntry};
use std::collections::BTreeSet;

pub fn plan(map: &ClusterMap, live: &BTreeSet<NodeId>) -> Option<ClusterMap> {
    let takers: Vec<NodeId> = map
        .nodes
        .iter()
        .filter(|(id, n)| live.contains(*id) && !n.draining)
        .map(|(id, _)| id.clone())
        .collect();
    if takers.is_empty() {
        return None;
    }
    let mut next = map.clone();
    let mut changed = false;
    let load = |m: &ClusterMap, n: &str| {
        m.shards
            .iter()
            .filter(|s| match &s.moving_to {
                Some(to) => to == n,
                None => s.owner.as_deref() == Some(n),
            })
            .count()
    };
    let least = |m: &ClusterMap, except: Option<&str>| {
        takers
            .iter()
            .filter(|t| Some(t.as_str()) != except)
            .min_by_key(|t| (load(m, t), t.as_str()))
            .cloned()
    };
    let draining = |m: &ClusterMap, n: &str| m.nodes.get(n).is_none_or(|e| e.draining);

    for i in 0..next.shards.len() {
        let s = &next.shards[i];
        let orphan = s.owner.as_ref().is_none_or(|o| !live.contains(o));
        let stuck_move = s
            .moving_to
            .as_ref()
            .is_some_and(|t| !live.contains(t) || draining(&next, t));
        if orphan {
            let to = least(&next, None);
            let s = &mut next.shards[i];
            s.owner = to;
            s.generation += 1;
            s.moving_to = None;
            changed = true;
        } else if stuck_move {
            next.shards[i].moving_to = None;
            changed = true;
        }
    }

    for i in 0..next.shards.len() {
        let s = &next.shards[i];
        if s.moving_to.is_none()
            && let Some(owner) = s.owner.clone()
            && draining(&next, &owner)
            && let Some(to) = least(&next, Some(&owner))
        {
            next.shards[i].moving_to = Some(to);
            changed = true;
        }
    }

    for i in 0..next.shards.len().saturating_sub(1) {
        let (l, r) = (&next.shards[i], &next.shards[i + 1]);
        if matches!(l.plan, Some(Plan::Merge { .. }))
            && l.moving_to.is_none()
            && r.moving_to.is_none()
            && l.owner != r.owner
            && let Some(to) = l.owner.clone()
            && live.contains(&to)
            && !draining(&next, &to)
        {
            next.shards[i + 1].moving_to = Some(to);
            changed = true;
        }
    }

    // One move in flight per node, as source or target, so a node never closes or opens
    // many shards at once.
    loop {
        let busy: BTreeSet<&str> = next
            .shards
            .iter()
            .filter_map(|s| Some([s.owner.as_deref()?, s.moving_to.as_deref()?]))
            .flatten()
            .collect();
        let free: Vec<(usize, &NodeId)> = takers
            .iter()
            .filter(|t| !busy.contains(t.as_str()))
            .map(|t| (load(&next, t), t))
            .collect();
        let (Some(&(most, from)), Some(&(fewest, to))) = (
            free.iter().max_by_key(|(l, t)| (*l, std::cmp::Reverse(*t))),
            free.iter().min_by_key(|(l, t)| (*l, *t)),
        ) else {
            break;
        };
        if most <= fewest + 1 {
            break;
        }
        let (from, to) = (from.clone(), to.clone());
        let Some(i) = (0..next.shards.len()).rev().find(|&i| {
            let s = &next.shards[i];
            s.owner.as_ref() == Some(&from)
                && s.moving_to.is_none()
                && s.plan.is_none()
                && merging_with(&next, s.id).is_none()
        }) else {
            break;
        };
        next.shards[i].moving_to = Some(to);
        changed = true;
    }
    if !changed {
        changed = even_weights(&mut next, &takers);
    }
    changed.then_some(next)
}

/// A move worth less than this share of the heavier node's weight is not made.
const WORTH: f64 = 0.2;

/// Moves a shard, or swaps two, between the heaviest and lightest nodes by weight; `true`
/// if it asked for one. Only when no move is under way, so counts are even.
fn even_weights(m: &mut ClusterMap, takers: &[NodeId]) -> bool {
    if takers.len() < 2 || m.shards.iter().any(|s| s.moving_to.is_some()) {
        return false;
    }
    let total = |f: fn(&super::ShardLoad) -> u64| {
        m.shards
            .iter()
            .filter_map(|s| s.load.as_ref())
            .map(f)
            .sum::<u64>()
            .max(1) as f64
    };
    let (bytes, calls) = (total(|l| l.bytes), total(|l| l.calls_per_sec));
    let weight = |s: &ShardEntry| {
        s.load.map_or(0.0, |l| {
            l.bytes as f64 / bytes + l.calls_per_sec as f64 / calls
        })
    };
    let of = |n: &str| -> (f64, usize) {
        let owned = m.shards.iter().filter(|s| s.owner.as_deref() == Some(n));
        (owned.clone().map(weight).sum(), owned.count())
    };
    let by_weight = |a: &&NodeId, b: &&NodeId| of(a).0.total_cmp(&of(b).0).then(a.cmp(b));
    let (Some(heavy), Some(light)) = (
        takers.iter().max_by(by_weight),
        takers.iter().min_by(by_weight),
    ) else {
        return false;
    };
    let ((wh, ch), (wl, cl)) = (of(heavy), of(light));
    let movable = |n: &str| -> Vec<usize> {
        (0..m.shards.len())
            .filter(|&i| {
                let s = &m.shards[i];
                s.owner.as_deref() == Some(n) && s.plan.is_none() && merging_with(m, s.id).is_none()
            })
            .collect()
    };
    let (from, to) = (movable(heavy), movable(light));
    // The heavier of the two after each candidate: a single move keeps counts even only
    // from the node with more shards; a swap keeps them as they are.
    let mut best: Option<(f64, usize, Option<usize>)> = None;
    for &i in &from {
        let wi = weight(&m.shards[i]);
        if ch > cl {
            let after = (wh - wi).max(wl + wi);
            if best.is_none_or(|b| after < b.0) {
                best = Some((after, i, None));
            }
        }
        for &j in &to {
            let d = wi - weight(&m.shards[j]);
            let after = (wh - d).max(wl + d);
            if best.is_none_or(|b| after < b.0) {
                best = Some((after, i, Some(j)));
            }
        }
    }
    let Some((after, i, j)) = best else {
        return false;
    };
    if heavy == light || after >= wh * (1.0 - WORTH) {
        return false;
    }
    m.shards[i].moving_to = Some(light.clone());
    if let Some(j) = j {
        m.shards[j].moving_to = Some(heavy.clone());
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::NodeEntry;

    fn map(shards: u16, nodes: &[&str]) -> ClusterMap {
        let mut m = ClusterMap::initial(shards);
        for n in nodes {
            m.nodes.insert(
                n.to_string(),
                NodeEntry {
                    url: format!("http://{n}"),
                    draining: false,
                },
            );
        }
        m
    }

    fn live(nodes: &[&str]) -> BTreeSet<NodeId> {
        nodes.iter().map(|n| n.to_string()).collect()
    }

    fn counts(m: &ClusterMap) -> Vec<(String, usize)> {
        m.nodes
            .keys()
            .map(|n| (n.clone(), m.owned_by(n).count()))
            .collect()
    }

    /// Applies every move the plan asks for, as the owners would.
    fn settle(mut m: ClusterMap, live_nodes: &BTreeSet<NodeId>) -> ClusterMap {
        for _ in 0..100 {
            match plan(&m, live_nodes) {
                Some(next) => m = next,
                None => return m,
            }
            for s in &mut m.shards {
                if let Some(to) = s.moving_to.take() {
                    s.owner = Some(to);
                    s.generation += 1;
                }
            }
            m.validate().unwrap();
        }
        panic!("placement did not settle: {m:?}");
    }

    #[test]
    fn shards_without_owners_are_spread_evenly() {
        let m = map(8, &["a", "b", "c"]);
        let done = settle(m, &live(&["a", "b", "c"]));
        let c: Vec<usize> = counts(&done).into_iter().map(|(_, n)| n).collect();
        assert_eq!(c.iter().sum::<usize>(), 8);
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "{c:?}"
        );
        assert!(done.shards.iter().all(|s| s.generation >= 1));
    }

    #[test]
    fn a_dead_owners_shards_go_to_the_living_in_one_edit() {
        let done = settle(map(6, &["a", "b", "c"]), &live(&["a", "b", "c"]));
        let lost: Vec<u64> = done.owned_by("b").map(|s| s.id).collect();
        let next = plan(&done, &live(&["a", "c"])).expect("an edit");
        for id in &lost {
            let s = next.shard(*id).unwrap();
            assert!(matches!(s.owner.as_deref(), Some("a" | "c")));
            assert_eq!(s.generation, done.shard(*id).unwrap().generation + 1);
            assert_eq!(s.moving_to, None, "a failover is immediate, not a move");
        }
        assert_eq!(plan(&next, &live(&["a", "c"])), None, "and then nothing");
    }

    #[test]
    fn a_new_node_receives_shards_by_moves_and_a_draining_one_gives_them_up() {
        let mut done = settle(map(6, &["a", "b"]), &live(&["a", "b"]));
        done.nodes.insert(
            "c".into(),
            NodeEntry {
                url: "http://c".into(),
                draining: false,
            },
        );
        let first = plan(&done, &live(&["a", "b", "c"])).unwrap();
        assert!(
            first.shards.iter().all(|s| s.owner.as_deref() != Some("c")),
            "a live owner is asked to move, never replaced"
        );
        let done = settle(done, &live(&["a", "b", "c"]));
        assert_eq!(done.owned_by("c").count(), 2, "{:?}", counts(&done));
        let mut draining = done.clone();
        draining.nodes.get_mut("a").unwrap().draining = true;
        let done = settle(draining, &live(&["a", "b", "c"]));
        assert_eq!(done.owned_by("a").count(), 0);
        assert_eq!(done.owned_by("b").count() + done.owned_by("c").count(), 6);
    }

    #[test]
    fn a_merge_brings_its_right_shard_to_the_left_ones_owner_and_plans_stay_put() {
        let mut m = settle(map(4, &["a", "b"]), &live(&["a", "b"]));
        let (l, r) = (m.shards[1].id, m.shards[2].id);
        m.shards[2].owner = Some(
            if m.shards[1].owner.as_deref() == Some("a") {
                "b"
            } else {
                "a"
            }
            .into(),
        );
        m.next_shard += 1;
        m.shards[1].plan = Some(Plan::Merge {
            right: r,
            into: m.next_shard - 1,
        });
        m.validate().unwrap();
        let next = plan(&m, &live(&["a", "b"])).expect("a move");
        assert_eq!(
            next.shard(r).unwrap().moving_to,
            next.shard(l).unwrap().owner
        );
        // A third node balances with the shards that have no plan.
        let mut m = settle(m, &live(&["a", "b"]));
        m.nodes.insert(
            "c".into(),
            NodeEntry {
                url: "http://c".into(),
                draining: false,
            },
        );
        let done = settle(m.clone(), &live(&["a", "b", "c"]));
        assert_eq!(done.shard(l).unwrap().owner, m.shard(l).unwrap().owner);
        assert_eq!(done.shard(r).unwrap().owner, m.shard(l).unwrap().owner);
    }

    /// With counts even, the heavy node swaps its heaviest shard for the light node's
    /// lightest, once; a difference not worth a move moves nothing.
    #[test]
    fn even_counts_are_evened_by_size_and_calls() {
        let mut m = settle(map(4, &["a", "b"]), &live(&["a", "b"]));
        let load = |bytes: u64, calls: u64| {
            Some(crate::map::ShardLoad {
                bytes: bytes << 20,
                calls_per_sec: calls,
            })
        };
        let a: Vec<u64> = m.owned_by("a").map(|s| s.id).collect();
        let b: Vec<u64> = m.owned_by("b").map(|s| s.id).collect();
        for (id, l) in [
            (a[0], load(900, 900)),
            (a[1], load(800, 800)),
            (b[0], load(100, 100)),
            (b[1], load(10, 10)),
        ] {
            m.shards.iter_mut().find(|s| s.id == id).unwrap().load = l;
        }
        let next = plan(&m, &live(&["a", "b"])).expect("a swap");
        let moves: Vec<(u64, Option<String>)> = next
            .shards
            .iter()
            .filter(|s| s.moving_to.is_some())
            .map(|s| (s.id, s.moving_to.clone()))
            .collect();
        assert_eq!(moves.len(), 2, "{moves:?}");
        let done = settle(m, &live(&["a", "b"]));
        assert_eq!(done.owned_by("a").count(), 2);
        let w = |n: &str| -> u64 { done.owned_by(n).map(|s| s.load.unwrap().bytes >> 20).sum() };
        assert!(w("a").max(w("b")) <= 1000, "{} {}", w("a"), w("b"));

        // Near even: nothing moves.
        let mut m = settle(map(2, &["a", "b"]), &live(&["a", "b"]));
        m.shards[0].load = load(100, 100);
        m.shards[1].load = load(90, 90);
        assert_eq!(plan(&m, &live(&["a", "b"])), None);
    }

    #[test]
    fn nothing_changes_without_a_live_taker() {
        let m = map(2, &["a"]);
        assert_eq!(plan(&m, &live(&[])), None);
    }
}
