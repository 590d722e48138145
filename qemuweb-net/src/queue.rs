//! A port's egress queue: bounded in bytes and in frames per sender, emptied round-robin
//! between senders, so one sender's flood cannot take the place of the others' frames.

use std::collections::VecDeque;

/// Who sent a frame into a queue: a port's index, or [`SERVICES`].
pub(crate) type Source = u64;

/// The network's own services (DHCP, DNS, ARP, ICMP) as a sender.
pub(crate) const SERVICES: Source = u64::MAX;

#[derive(Debug)]
struct Lane {
    source: Source,
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued, after dropping these senders' newest frames to make room (the sender that
    /// held the most bytes loses first).
    Queued { evicted: Vec<Source> },
    /// Not queued: the sender's lane is full, or it already holds the most bytes.
    Refused,
}

#[derive(Debug)]
pub(crate) struct EgressQueue {
    lanes: Vec<Lane>,
    next: usize,
    bytes: usize,
    max_bytes: usize,
    max_frames_per_source: usize,
}

impl EgressQueue {
    pub(crate) fn new(max_bytes: usize, max_frames_per_source: usize) -> Self {
        EgressQueue {
            lanes: Vec::new(),
            next: 0,
            bytes: 0,
            max_bytes: max_bytes.max(1),
            max_frames_per_source: max_frames_per_source.max(1),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.lanes.iter().map(|l| l.frames.len()).sum()
    }

    pub(crate) fn push(&mut self, source: Source, frame: Vec<u8>) -> Pushed {
        let len = frame.len();
        if len > self.max_bytes {
            return Pushed::Refused;
        }
        let own = self.lanes.iter().position(|l| l.source == source);
        if let Some(i) = own {
            if self.lanes[i].frames.len() >= self.max_frames_per_source {
                return Pushed::Refused;
            }
        }
        let mut evicted = Vec::new();
        while self.bytes + len > self.max_bytes {
            let own_bytes = own.map_or(0, |i| self.lanes[i].bytes);
            // The fullest lane of another sender; when the sender's own lane holds as many
            // bytes, the sender is the one over its share.
            let Some(victim) = (0..self.lanes.len())
                .filter(|&i| Some(i) != own && self.lanes[i].bytes > own_bytes)
                .max_by_key(|&i| self.lanes[i].bytes)
            else {
                return Pushed::Refused;
            };
            let lane = &mut self.lanes[victim];
            let dropped = lane.frames.pop_back().map_or(0, |f| f.len());
            lane.bytes -= dropped;
            self.bytes -= dropped;
            evicted.push(lane.source);
        }
        let i = match own {
            Some(i) => i,
            None => {
                self.lanes.push(Lane {
                    source,
                    frames: VecDeque::new(),
                    bytes: 0,
                });
                self.lanes.len() - 1
            }
        };
        self.lanes[i].frames.push_back(frame);
        self.lanes[i].bytes += len;
        self.bytes += len;
        Pushed::Queued { evicted }
    }

    /// The next frame, taking senders in turn.
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        let n = self.lanes.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if let Some(frame) = self.lanes[i].frames.pop_front() {
                self.lanes[i].bytes -= frame.len();
                self.bytes -= frame.len();
                self.next = i + 1;
                if self.lanes[i].frames.is_empty() {
                    self.lanes.remove(i);
                    self.next = i;
                }
                return Some(frame);
            }
        }
        None
    }

    /// Forgets the frames of a sender that left.
    pub(crate) fn forget(&mut self, source: Source) {
        if let Some(i) = self.lanes.iter().position(|l| l.source == source) {
            self.bytes -= self.lanes[i].bytes;
            self.lanes.remove(i);
            if self.next > i {
                self.next -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_take_turns() {
        let mut q = EgressQueue::new(1 << 20, 100);
        for i in 0..3u8 {
            q.push(1, vec![1, i]);
        }
        q.push(2, vec![2, 0]);
        q.push(SERVICES, vec![9, 0]);
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [vec![1, 0], vec![2, 0], vec![9, 0], vec![1, 1], vec![1, 2]]
        );
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn a_flood_cannot_push_out_the_others() {
        let mut q = EgressQueue::new(1000, 1000);
        // The flooder fills the queue.
        let mut queued = 0;
        for _ in 0..100 {
            if q.push(1, vec![0; 100]) != Pushed::Refused {
                queued += 1;
            }
        }
        assert_eq!(queued, 10);
        // Another sender still gets in: the flooder's newest frames make room.
        for i in 1..5u8 {
            assert_eq!(q.push(2, vec![i; 100]), Pushed::Queued { evicted: vec![1] });
        }
        // Until the two hold equal shares (5 and 5 of 10 frames)...
        assert_eq!(q.push(2, vec![5; 100]), Pushed::Queued { evicted: vec![1] });
        // ...beyond which the second sender is the one over its share.
        assert_eq!(q.push(2, vec![6; 100]), Pushed::Refused);
        assert_eq!(q.push(1, vec![0; 100]), Pushed::Refused);
        let from_2 = std::iter::from_fn(|| q.pop()).filter(|f| f[0] != 0).count();
        assert_eq!(from_2, 5);
    }

    #[test]
    fn lanes_are_bounded_in_frames_and_forgotten() {
        let mut q = EgressQueue::new(1 << 20, 2);
        assert_ne!(q.push(1, vec![1]), Pushed::Refused);
        assert_ne!(q.push(1, vec![1]), Pushed::Refused);
        assert_eq!(q.push(1, vec![1]), Pushed::Refused);
        assert_eq!(q.push(3, vec![0; 2 << 20]), Pushed::Refused);
        q.push(2, vec![2]);
        q.forget(1);
        assert_eq!(q.len(), 1);
        assert_eq!(q.pop(), Some(vec![2]));
        assert_eq!(q.pop(), None);
    }
}
