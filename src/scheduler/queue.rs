//! The scheduling queue (upstream `internal/queue`): an active heap ordered
//! by priority then age, and waiting pods. A pod that did not fit waits as
//! *unschedulable*, tagged with what rejected it; a cluster event that could
//! change that verdict (a node added, a pod deleted, ...) moves it to
//! backoff, from where it is retried once at least the initial backoff has
//! passed since its last attempt. Without any event, an unschedulable pod is
//! still retried when its per-pod backoff runs out (1 s doubling to 10 s),
//! so nothing waits forever on a missed event.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What rejected a pod; cluster events name the flags they may unblock.
pub mod flags {
    /// Node-level checks: taints, node affinity, unschedulable, readiness.
    pub const NODE: u32 = 1 << 0;
    /// Resources, host ports, pod count.
    pub const RESOURCES: u32 = 1 << 1;
    pub const POD_AFFINITY: u32 = 1 << 2;
    pub const SPREAD: u32 = 1 << 3;
    /// PodGroup missing, or not enough members yet.
    pub const GANG: u32 = 1 << 4;
    /// A preemptor waiting for its victims to go.
    pub const PREEMPTION: u32 = 1 << 5;
    pub const COUNT: usize = 6;
    pub const ALL: u32 = (1 << COUNT) - 1;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    /// Popped, being scheduled or bound.
    InFlight,
    /// Waiting for its retry time.
    Backoff,
    /// Waiting for a cluster event (or its periodic retry).
    Unschedulable(u32),
}

struct Entry {
    priority: i32,
    created_ms: i64,
    attempts: u32,
    last_attempt: Option<Instant>,
    retry_at: Option<Instant>,
    token: u64,
    state: State,
}

type HeapItem = (i32, Reverse<i64>, Reverse<u64>, Arc<str>);

#[derive(Default)]
pub struct Queue {
    entries: HashMap<Arc<str>, Entry>,
    active: BinaryHeap<HeapItem>,
    timers: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    by_flag: [HashSet<Arc<str>>; flags::COUNT],
    next_token: u64,
}

pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    (INITIAL_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
}

impl Queue {
    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// A new pending pod goes straight to the active heap.
    pub fn add(&mut self, key: Arc<str>, priority: i32, created_ms: i64) {
        if self.entries.contains_key(&key) {
            return;
        }
        self.entries.insert(
            key.clone(),
            Entry {
                priority,
                created_ms,
                attempts: 0,
                last_attempt: None,
                retry_at: None,
                token: 0,
                state: State::Backoff,
            },
        );
        self.activate(&key);
    }

    /// Moves a waiting pod to the active heap now (its spec changed, or its
    /// retry time came).
    pub fn activate(&mut self, key: &str) {
        let token = self.token();
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        if matches!(e.state, State::Active | State::InFlight) {
            return;
        }
        if let State::Unschedulable(f) = e.state {
            Self::unflag(&mut self.by_flag, key, f);
        }
        e.state = State::Active;
        e.token = token;
        e.retry_at = None;
        let k: Arc<str> = self
            .by_key(key)
            .unwrap_or_else(|| Arc::from(key.to_string()));
        let e = &self.entries[key];
        self.active
            .push((e.priority, Reverse(e.created_ms), Reverse(token), k));
    }

    fn by_key(&self, key: &str) -> Option<Arc<str>> {
        self.entries.get_key_value(key).map(|(k, _)| k.clone())
    }

    fn unflag(by_flag: &mut [HashSet<Arc<str>>; flags::COUNT], key: &str, f: u32) {
        for (i, set) in by_flag.iter_mut().enumerate() {
            if f & (1 << i) != 0 {
                set.remove(key);
            }
        }
    }

    /// The highest-priority active pod, now in flight.
    pub fn pop(&mut self) -> Option<Arc<str>> {
        while let Some((_, _, Reverse(token), key)) = self.active.pop() {
            if let Some(e) = self.entries.get_mut(&key)
                && e.state == State::Active
                && e.token == token
            {
                e.state = State::InFlight;
                return Some(key);
            }
        }
        None
    }

    /// Takes a pod out of the queue wherever it is (a gang's siblings are
    /// scheduled together with the popped member).
    pub fn take(&mut self, key: &str) {
        if let Some(e) = self.entries.get_mut(key) {
            if let State::Unschedulable(f) = e.state {
                Self::unflag(&mut self.by_flag, key, f);
            }
            e.state = State::InFlight;
        }
    }

    /// The pod left scheduling (bound, deleted, no longer ours).
    pub fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key)
            && let State::Unschedulable(f) = e.state
        {
            Self::unflag(&mut self.by_flag, key, f);
        }
    }

    /// The pod did not fit: wait for an event tagged with `why`, or for the
    /// backoff to run out.
    pub fn unschedulable(&mut self, key: &str, why: u32, now: Instant) {
        self.wait(key, Some(why & flags::ALL), now);
    }

    /// A transient failure (e.g. a failed bind): retry after backoff.
    pub fn backoff(&mut self, key: &str, now: Instant) {
        self.wait(key, None, now);
    }

    fn wait(&mut self, key: &str, why: Option<u32>, now: Instant) {
        let token = self.token();
        let k = self.by_key(key);
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let Some(k) = k else { return };
        if let State::Unschedulable(f) = e.state {
            Self::unflag(&mut self.by_flag, key, f);
        }
        e.attempts += 1;
        e.last_attempt = Some(now);
        let at = now + backoff(e.attempts);
        e.retry_at = Some(at);
        e.token = token;
        e.state = match why {
            Some(f) => {
                for (i, set) in self.by_flag.iter_mut().enumerate() {
                    if f & (1 << i) != 0 {
                        set.insert(k.clone());
                    }
                }
                State::Unschedulable(f)
            }
            None => State::Backoff,
        };
        self.timers.push(Reverse((at, token, k)));
    }

    /// A cluster event that may unblock pods rejected for `mask`: they
    /// retry once the initial backoff since their last attempt has passed.
    pub fn on_event(&mut self, mask: u32, now: Instant) {
        let mut moved: Vec<Arc<str>> = Vec::new();
        for i in 0..flags::COUNT {
            if mask & (1 << i) != 0 {
                moved.extend(self.by_flag[i].drain());
            }
        }
        for k in moved {
            let token = self.token();
            let Some(e) = self.entries.get_mut(&k) else {
                continue;
            };
            let State::Unschedulable(f) = e.state else {
                continue;
            };
            Self::unflag(&mut self.by_flag, &k, f);
            let earliest = e.last_attempt.map(|t| t + INITIAL_BACKOFF).unwrap_or(now);
            let at = earliest.max(now);
            e.state = State::Backoff;
            if e.retry_at.is_none_or(|r| at < r) {
                e.retry_at = Some(at);
                e.token = token;
                self.timers.push(Reverse((at, token, k)));
            }
        }
    }

    /// Activates waiting pods whose time has come.
    pub fn flush(&mut self, now: Instant) {
        while let Some(Reverse((at, token, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let token = *token;
            let Some(Reverse((_, _, key))) = self.timers.pop() else {
                break;
            };
            if self.entries.get(&key).is_some_and(|e| {
                e.token == token && matches!(e.state, State::Backoff | State::Unschedulable(_))
            }) {
                self.activate(&key);
            }
        }
    }

    /// When the next waiting pod is due.
    pub fn next_due(&mut self) -> Option<Instant> {
        // Drop stale timers so an idle scheduler does not wake for nothing.
        while let Some(Reverse((_, token, key))) = self.timers.peek() {
            let live = self.entries.get(key).is_some_and(|e| {
                e.token == *token && matches!(e.state, State::Backoff | State::Unschedulable(_))
            });
            if live {
                break;
            }
            self.timers.pop();
        }
        self.timers.peek().map(|Reverse((at, _, _))| *at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_backoff() {
        let mut q = Queue::default();
        q.add("a".into(), 0, 2);
        q.add("b".into(), 10, 3);
        q.add("c".into(), 0, 1);
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert_eq!(q.pop().as_deref(), Some("c"));
        let now = Instant::now();
        q.unschedulable("c", flags::RESOURCES, now);
        assert_eq!(q.pop().as_deref(), Some("a"));
        assert_eq!(q.pop(), None);
        q.flush(now + Duration::from_millis(500));
        assert_eq!(q.pop(), None);
        q.flush(now + Duration::from_millis(1001));
        assert_eq!(q.pop().as_deref(), Some("c"));
        // Second failure: 2 s backoff, but an event brings it back at 1 s.
        q.unschedulable("c", flags::RESOURCES, now);
        q.on_event(flags::NODE, now);
        q.flush(now + Duration::from_millis(1500));
        assert_eq!(q.pop(), None);
        q.on_event(flags::RESOURCES, now);
        q.flush(now + Duration::from_millis(1001));
        assert_eq!(q.pop().as_deref(), Some("c"));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(4), Duration::from_secs(8));
        assert_eq!(backoff(9), Duration::from_secs(10));
    }
}
