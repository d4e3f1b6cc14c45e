//! Our table of publishes awaiting the broker's acknowledgement, by packet id.
//!
//! We choose every packet id ourselves (a free one, never one still awaiting its
//! acknowledgement), so an acknowledgement names exactly one message: the result it
//! delivers leaves the durable outbox then, and not before. After a broken connection the
//! table is what is sent again, with the same packet ids, in the order first sent.

use super::Encoded;

/// Publishes sent at QoS 1 or 2 and not yet acknowledged (PUBACK, or PUBCOMP for QoS 2).
#[derive(Debug)]
pub(super) struct Inflight {
    /// Indexed by packet id (0 is never used): the message and when it was first sent.
    slots: Vec<Option<(u64, Encoded)>>,
    used: usize,
    /// Where the search for a free id starts: ids are handed out in turn, so one just
    /// acknowledged is not reused at once.
    cursor: usize,
    /// Counts messages in, to keep their order.
    stamp: u64,
}

impl Inflight {
    /// A table of `max` packet ids (1 to `max`): at most `max` messages in flight.
    pub(super) fn new(max: u16) -> Self {
        Inflight {
            slots: vec![None; usize::from(max.max(1)) + 1],
            used: 0,
            cursor: 1,
            stamp: 0,
        }
    }

    /// Whether every packet id is taken.
    pub(super) fn is_full(&self) -> bool {
        self.used + 1 >= self.slots.len()
    }

    /// How many packet ids are free.
    pub(super) fn free(&self) -> usize {
        self.slots.len() - 1 - self.used
    }

    /// Whether nothing awaits an acknowledgement.
    pub(super) fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Takes a free packet id for `msg`; `None` if every id is taken.
    pub(super) fn insert(&mut self, msg: Encoded) -> Option<u16> {
        if self.is_full() {
            return None;
        }
        let ids = self.slots.len() - 1;
        let free = (0..ids)
            .map(|k| 1 + (self.cursor - 1 + k) % ids)
            .find(|&id| self.slots[id].is_none())?;
        self.stamp += 1;
        self.slots[free] = Some((self.stamp, msg));
        self.used += 1;
        self.cursor = 1 + free % ids;
        u16::try_from(free).ok()
    }

    /// The message `pkid` was acknowledged: it leaves the table. `None` if no message
    /// awaited that id.
    pub(super) fn acknowledged(&mut self, pkid: u16) -> Option<Encoded> {
        let (_, msg) = self.slots.get_mut(usize::from(pkid))?.take()?;
        self.used -= 1;
        Some(msg)
    }

    /// Every message awaiting acknowledgement, with its packet id, in the order first sent.
    pub(super) fn in_order(&self) -> Vec<(u16, Encoded)> {
        let mut all: Vec<(u64, u16, Encoded)> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(id, slot)| {
                let (stamp, msg) = slot.as_ref()?;
                Some((*stamp, u16::try_from(id).ok()?, msg.clone()))
            })
            .collect();
        all.sort_by_key(|(stamp, _, _)| *stamp);
        all.into_iter().map(|(_, id, msg)| (id, msg)).collect()
    }

    /// Whether every message awaiting acknowledgement is in the durable outbox (or is a
    /// heartbeat, which is state, not history): nothing is lost if the process ends now.
    pub(super) fn all_kept(&self) -> bool {
        self.slots
            .iter()
            .flatten()
            .all(|(_, msg)| kept_or_stale(msg))
    }
}

/// Whether `msg` survives the process (stored), or need not (a heartbeat or the offline
/// notice: the broker's Last Will says offline for us).
pub(super) fn kept_or_stale(msg: &Encoded) -> bool {
    msg.stored().is_some() || msg.topic() == crate::protocol::Topic::Alive
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Topic;

    fn msg(seq: u64) -> Encoded {
        Encoded::replay(Topic::Results, format!("{seq}").into_bytes(), seq)
    }

    #[test]
    fn ids_are_free_ones_taken_in_turn_and_an_ack_names_one_message() {
        let mut table = Inflight::new(3);
        assert_eq!(table.insert(msg(1)), Some(1));
        assert_eq!(table.insert(msg(2)), Some(2));
        assert_eq!(table.insert(msg(3)), Some(3));
        assert!(table.is_full());
        assert_eq!(table.insert(msg(4)), None);
        assert_eq!(table.acknowledged(2).and_then(|m| m.stored()), Some(2));
        assert_eq!(table.acknowledged(2), None, "acknowledged once");
        assert_eq!(table.acknowledged(9), None, "an id out of range");
        assert_eq!(table.insert(msg(4)), Some(2), "the only free id");
        let order: Vec<u64> = table
            .in_order()
            .iter()
            .filter_map(|(_, m)| m.stored())
            .collect();
        assert_eq!(order, [1, 3, 4], "the order first sent, not by id");
        table.acknowledged(3);
        assert_eq!(table.insert(msg(5)), Some(3), "in turn after 2");
        for id in 1..=3 {
            table.acknowledged(id);
        }
        assert!(table.is_empty());
        assert!(table.all_kept());
    }
}
