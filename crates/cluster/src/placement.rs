//! Where a blob's copies go: rendezvous (highest random weight) hashing over the nodes that
//! may take new data, spread over zones, and the placement record that says where they went.
//!
//! Rendezvous hashing moves only the blobs whose top-ranked nodes changed when a node joins
//! or leaves (about 1/n of them), and needs no shared ring state: every node ranks the same
//! candidates the same way from the blob id alone.

use serde::{Deserialize, Serialize};

/// Key prefix of placement records in `Table::Cluster` (followed by the 16-byte blob id).
pub(crate) const PLACE_PREFIX: &[u8] = b"place/";

pub(crate) fn place_key(id: u128) -> Vec<u8> {
    [PLACE_PREFIX, &id.to_be_bytes()[..]].concat()
}

/// Key prefix of tombstones: copies of deleted blobs that wait out the read grace.
pub(crate) const GONE_PREFIX: &[u8] = b"gone/";

pub(crate) fn gone_key(id: u128) -> Vec<u8> {
    [GONE_PREFIX, &id.to_be_bytes()[..]].concat()
}

/// The copies of a deleted blob still to remove, each by its own node, once `after_ms`
/// has passed (reads that began before the delete, on any node, finish first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    pub nodes: Vec<String>,
    pub after_ms: i64,
}

impl Gone {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The nodes holding a blob's copies; for an erasure-coded blob, the node of each shard in
/// shard order ("" for a shard lost and not yet rebuilt), and its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub nodes: Vec<String>,
    pub coded: Option<crate::erasure::Coded>,
}

/// A placement as stored. A coded one names its holders `shards`, not `nodes`, so that a
/// node of an older version (which knows only copies) finds the record damaged and leaves it
/// alone, instead of repairing or deleting the blob id its shards are not stored under.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Wire {
    Coded {
        shards: Vec<String>,
        coded: crate::erasure::Coded,
    },
    Copies {
        nodes: Vec<String>,
    },
}

impl Placement {
    pub(crate) fn copies(nodes: Vec<String>) -> Self {
        Self { nodes, coded: None }
    }
}

impl Placement {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let wire = match self.coded {
            Some(coded) => Wire::Coded {
                shards: self.nodes.clone(),
                coded,
            },
            None => Wire::Copies {
                nodes: self.nodes.clone(),
            },
        };
        // Strings and integers always serialize.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// A record that does not parse, or names a coding no writer produces (which would
    /// divide by zero or index past its shards), is damaged.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        match serde_json::from_slice(bytes).ok()? {
            Wire::Copies { nodes } => Some(Self { nodes, coded: None }),
            Wire::Coded { shards, coded } => (coded.sound()
                && shards.len() == coded.k as usize + coded.m as usize)
                .then_some(Self {
                    nodes: shards,
                    coded: Some(coded),
                }),
        }
    }
}

/// A candidate for a copy: its id and zone.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub id: &'a str,
    pub zone: Option<&'a str>,
}

/// The weight of `node` for blob `blob`: FNV-1a over both, finished with a 64-bit mixer so
/// that ids differing in one character rank independently. Fixed here (not std's hasher,
/// which may change between releases) because every node must rank alike.
fn weight(node: &str, blob: u128) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in blob.to_be_bytes().iter().chain(node.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Every candidate, best first for `blob`. The first `replicas` of the order are its
/// copies; where zones are given, no zone gets a second copy until every zone has one;
/// the rest are the replacements, in the order a failed copy moves to.
pub fn rank<'a>(blob: u128, candidates: &[Candidate<'a>], replicas: usize) -> Vec<Candidate<'a>> {
    let mut by_weight: Vec<(u64, Candidate<'a>)> = candidates
        .iter()
        .map(|c| (weight(c.id, blob), *c))
        .collect();
    // Ties (equal weights) break by id so the order is total.
    by_weight.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.id.cmp(b.1.id)));
    let mut chosen: Vec<Candidate<'a>> = Vec::with_capacity(by_weight.len());
    let mut taken = vec![false; by_weight.len()];
    let mut zones: Vec<Option<&str>> = Vec::new();
    // First pass: the best node of each zone not yet holding a copy.
    for (i, (_, c)) in by_weight.iter().enumerate() {
        if chosen.len() == replicas {
            break;
        }
        if !zones.contains(&c.zone) {
            zones.push(c.zone);
            chosen.push(*c);
            taken[i] = true;
        }
    }
    for (i, (_, c)) in by_weight.iter().enumerate() {
        if !taken[i] {
            chosen.push(*c);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize, zones: usize) -> (Vec<String>, Vec<String>) {
        let ids = (0..n).map(|i| format!("node-{i}")).collect();
        let zs = (0..n)
            .map(|i| format!("zone-{}", i % zones.max(1)))
            .collect();
        (ids, zs)
    }

    fn candidates<'a>(ids: &'a [String], zs: &'a [String], zoned: bool) -> Vec<Candidate<'a>> {
        ids.iter()
            .zip(zs)
            .map(|(id, z)| Candidate {
                id,
                zone: zoned.then_some(z.as_str()),
            })
            .collect()
    }

    #[test]
    fn every_node_ranks_alike_and_copies_spread_over_zones() {
        let (ids, zs) = nodes(9, 3);
        let c = candidates(&ids, &zs, true);
        for blob in 0..500u128 {
            let blob = blob.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
            let order = rank(blob, &c, 3);
            assert_eq!(order.len(), 9);
            let mut reversed = c.clone();
            reversed.reverse();
            let again: Vec<&str> = rank(blob, &reversed, 3).iter().map(|c| c.id).collect();
            let first: Vec<&str> = order.iter().map(|c| c.id).collect();
            assert_eq!(first, again, "the input order must not matter");
            let mut top: Vec<_> = order[..3].iter().map(|c| c.zone).collect();
            top.sort();
            top.dedup();
            assert_eq!(top.len(), 3, "three copies in three zones");
        }
    }

    /// Losing one node of n moves only the blobs it held, and spreads them over the rest.
    #[test]
    fn a_lost_node_moves_only_its_own_share() {
        let (ids, zs) = nodes(10, 1);
        let all = candidates(&ids, &zs, false);
        let without: Vec<_> = all.iter().copied().filter(|c| c.id != "node-3").collect();
        let (mut moved, mut held, mut load) = (0, 0, std::collections::HashMap::new());
        for blob in 0..4000u128 {
            let blob = blob.wrapping_mul(0x2545_f491_4f6c_dd1d_9e37_79b9_7f4a_7c15);
            let before: Vec<&str> = rank(blob, &all, 3)[..3].iter().map(|c| c.id).collect();
            let after: Vec<&str> = rank(blob, &without, 3)[..3].iter().map(|c| c.id).collect();
            for id in &before {
                *load.entry(*id).or_insert(0usize) += 1;
            }
            if before.contains(&"node-3") {
                held += 1;
                let kept = before.iter().filter(|id| after.contains(id)).count();
                assert_eq!(kept, 2, "the two other copies stay where they are");
            } else {
                assert_eq!(before, after);
            }
            moved += usize::from(before != after);
        }
        assert_eq!(moved, held);
        // 4000 blobs x 3 copies over 10 nodes: 1200 each; rendezvous keeps them within 15 %.
        for (id, n) in load {
            assert!((1020..=1380).contains(&n), "{id} holds {n}");
        }
    }

    #[test]
    fn fewer_nodes_than_replicas_gives_every_node() {
        let (ids, zs) = nodes(2, 2);
        let c = candidates(&ids, &zs, true);
        assert_eq!(rank(7, &c, 3).len(), 2);
        assert!(rank(7, &[], 3).is_empty());
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let p = Placement::copies(vec!["a".into(), "b".into()]);
        // A coded record has no `nodes`: a node that knows only copies finds it damaged
        // rather than repairing or deleting the blob id its shards are not stored under.
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct OldPlacement {
            nodes: Vec<String>,
        }
        let coded = Placement {
            nodes: vec!["a".into(); 3],
            coded: Some(crate::erasure::Coded {
                k: 2,
                m: 1,
                unit: 4096,
                size: 99,
            }),
        };
        assert!(serde_json::from_slice::<OldPlacement>(&coded.encode()).is_err());
        assert_eq!(Placement::decode(&coded.encode()), Some(coded));
        // Records written before erasure coding read as copies.
        assert_eq!(
            Placement::decode(br#"{"nodes":["a","b"]}"#),
            Some(p.clone())
        );
        assert_eq!(Placement::decode(&p.encode()), Some(p));
        assert_eq!(Placement::decode(b"{"), None);
        assert_eq!(place_key(1).len(), PLACE_PREFIX.len() + 16);
    }
}
