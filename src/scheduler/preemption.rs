//! DefaultPreemption's PostFilter: when a pod fits nowhere, find a node
//! where removing lower-priority pods makes it fit, with as little damage
//! as possible (fewest PDB violations, lowest victim priorities, fewest
//! victims), as upstream's `SelectVictimsOnNode` and
//! `pickOneNodeForPreemption` do.

use std::cmp::Reverse;
use std::sync::Arc;

use super::framework::{Cycle, Status, View, filter, fit_message, next_rand};
use super::model::{PodInfo, Selector};

pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// A PodDisruptionBudget as preemption weighs it.
#[derive(Clone)]
pub struct Pdb {
    pub namespace: String,
    pub selector: Option<Selector>,
    pub disruptions_allowed: i32,
}

pub struct Candidate {
    pub node: usize,
    /// Highest priority first.
    pub victims: Vec<Arc<PodInfo>>,
    pub pdb_violations: usize,
}

/// Why preemption did not happen.
pub struct NoPreemption {
    /// The PostFilter message, without the `preemption: ` prefix.
    pub message: String,
    /// No node can help: drop the pod's nominatedNodeName (upstream returns
    /// an empty nomination then; an ineligible pod keeps its own).
    pub clear_nominated: bool,
}

/// Tries preemption for `pod`, which failed the filters with `statuses`
/// (node index, status). Ok: the node to nominate and the pods to evict.
pub fn preempt(
    v: &View,
    pod: &PodInfo,
    cy: &Cycle,
    statuses: &[(usize, Status)],
    pdbs: &[Pdb],
    rng: &mut u64,
) -> Result<Candidate, NoPreemption> {
    let ineligible = |m: &str| NoPreemption {
        message: m.to_string(),
        clear_nominated: false,
    };
    if pod.preempt_never {
        return Err(ineligible("not eligible due to preemptionPolicy=Never."));
    }
    if let Some(nom) = &pod.nominated_node
        && let Some(&ni) = v.cache.node_index.get(nom)
    {
        let nominated_unresolvable = statuses.iter().any(|(i, s)| *i == ni && s.unresolvable);
        if !nominated_unresolvable
            && v.cache.nodes[ni]
                .usage
                .pods
                .iter()
                .any(|p| p.deleting && p.disruption_target && v.prio.of(p) < cy.priority)
        {
            return Err(ineligible(
                "not eligible due to a terminating pod on the nominated node.",
            ));
        }
    }
    let num_nodes = v.cache.nodes.len();
    let potential: Vec<usize> = statuses
        .iter()
        .filter(|(_, s)| !s.unresolvable)
        .map(|(i, _)| *i)
        .collect();
    let mut dry_statuses: Vec<Status> = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    if !potential.is_empty() {
        // Upstream dry-runs at least 10% of the potential nodes (at least
        // 100), starting at a random offset.
        let want = (potential.len() / 10).max(100).min(potential.len());
        let offset = (next_rand(rng) % potential.len() as u64) as usize;
        for k in 0..potential.len() {
            let ni = potential[(offset + k) % potential.len()];
            match select_victims(v, pod, cy, ni, pdbs) {
                Ok(c) => candidates.push(c),
                Err(s) => dry_statuses.push(s),
            }
            if candidates.len() >= want {
                break;
            }
        }
    }
    if candidates.is_empty() {
        let evaluated = dry_statuses.len();
        for _ in evaluated..num_nodes {
            dry_statuses.push(Status {
                unresolvable: true,
                reasons: vec![NOT_HELPFUL.into()],
                flag: 0,
            });
        }
        return Err(NoPreemption {
            message: fit_message(num_nodes, &dry_statuses),
            clear_nominated: true,
        });
    }
    Ok(pick(v, candidates))
}

fn importance(v: &View, p: &PodInfo) -> (i32, Reverse<i64>) {
    (v.prio.of(p), Reverse(p.start_ms))
}

fn select_victims(
    v: &View,
    pod: &PodInfo,
    cy: &Cycle,
    ni: usize,
    pdbs: &[Pdb],
) -> Result<Candidate, Status> {
    let node = &v.cache.nodes[ni];
    let mut potential: Vec<Arc<PodInfo>> = node
        .usage
        .pods
        .iter()
        .filter(|p| p.key != pod.key && v.prio.of(p) < cy.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status {
            unresolvable: true,
            reasons: vec![NO_VICTIMS.into()],
            flag: 0,
        });
    }
    filter(v, pod, cy, node, &potential)?;
    // Most important first: they are the first to be given back.
    potential.sort_by_key(|p| Reverse(importance(v, p)));
    let mut allowed: Vec<i32> = pdbs.iter().map(|p| p.disruptions_allowed).collect();
    let mut violating = Vec::new();
    let mut non_violating = Vec::new();
    for p in potential.iter() {
        let mut violates = false;
        for (i, pdb) in pdbs.iter().enumerate() {
            if pdb.namespace == p.namespace
                && pdb
                    .selector
                    .as_ref()
                    .is_some_and(|s| !s.reqs.is_empty() && s.matches(&p.labels))
            {
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violates = true;
                }
            }
        }
        if violates {
            violating.push(p.clone());
        } else {
            non_violating.push(p.clone());
        }
    }
    let mut removed = potential.clone();
    let mut victims = Vec::new();
    let mut pdb_violations = 0;
    for (list, is_violating) in [(violating, true), (non_violating, false)] {
        for p in list {
            let without: Vec<Arc<PodInfo>> =
                removed.iter().filter(|r| r.key != p.key).cloned().collect();
            if filter(v, pod, cy, node, &without).is_ok() {
                removed = without;
            } else {
                if is_violating {
                    pdb_violations += 1;
                }
                victims.push(p);
            }
        }
    }
    victims.sort_by_key(|p| Reverse(importance(v, p)));
    Ok(Candidate {
        node: ni,
        victims,
        pdb_violations,
    })
}

/// Upstream's criteria, in order: fewest PDB violations, lowest
/// highest-victim priority, lowest priority sum, fewest victims, latest
/// start of the highest-priority victims; then the first.
fn pick(v: &View, mut candidates: Vec<Candidate>) -> Candidate {
    let key = |c: &Candidate| {
        let highest = c.victims.first().map(|p| v.prio.of(p)).unwrap_or(i32::MIN);
        let sum: i64 = c
            .victims
            .iter()
            .map(|p| v.prio.of(p) as i64 + i32::MAX as i64 + 1)
            .sum();
        let earliest_of_highest = c
            .victims
            .iter()
            .filter(|p| v.prio.of(p) == highest)
            .map(|p| p.start_ms)
            .min()
            .unwrap_or(i64::MAX);
        (
            c.pdb_violations,
            highest,
            sum,
            c.victims.len(),
            Reverse(earliest_of_highest),
        )
    };
    let mut best = 0;
    for i in 1..candidates.len() {
        if key(&candidates[i]) < key(&candidates[best]) {
            best = i;
        }
    }
    candidates.swap_remove(best)
}
