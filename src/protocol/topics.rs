//! Topic names: the one place where MQTT topic strings are built and parsed.
//!
//! Every Propeller topic hangs off one base, `m/{tenant}/c/{channel}` (docs/protocol.md §2).
//! [`Topics`] renders a [`Topic`] under that base and parses a received topic back into a
//! [`Topic`] by exact suffix match — never by substring.

/// A topic the proplet publishes or subscribes to, relative to the channel base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// `control/proplet/create`: discovery announcement (proplet → manager).
    Create,
    /// `control/proplet/alive`: heartbeat and Last Will (proplet → manager).
    Alive,
    /// `control/proplet/results`: task results (proplet → manager).
    Results,
    /// `control/proplet/invoke_results`: invocation results (proplet → manager).
    InvokeResults,
    /// `control/proplet/metrics`: the proplet's process metrics (proplet → manager).
    Metrics,
    /// `control/proplet/task_metrics`: a running task's metrics (proplet → manager).
    TaskMetrics,
    /// `control/manager/start`: start a task (manager → proplets).
    Start,
    /// `control/manager/stop`: stop a task (manager → proplets).
    Stop,
    /// `control/manager/invoke`: invoke a latent task (manager → proplets).
    Invoke,
    /// `registry/proplet`: binary request (proplet → proxy).
    RegistryRequest,
    /// `registry/server`: binary chunk (proxy → proplets).
    RegistryChunk,
}

impl Topic {
    /// The topics a proplet subscribes to, in subscription order.
    pub const SUBSCRIPTIONS: [Topic; 4] = [
        Topic::Start,
        Topic::Stop,
        Topic::Invoke,
        Topic::RegistryChunk,
    ];

    /// Every topic, for table-driven parsing.
    const ALL: [Topic; 11] = [
        Topic::Create,
        Topic::Alive,
        Topic::Results,
        Topic::InvokeResults,
        Topic::Metrics,
        Topic::TaskMetrics,
        Topic::Start,
        Topic::Stop,
        Topic::Invoke,
        Topic::RegistryRequest,
        Topic::RegistryChunk,
    ];

    /// The topic's path below the channel base.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Create => "control/proplet/create",
            Topic::Alive => "control/proplet/alive",
            Topic::Results => "control/proplet/results",
            Topic::InvokeResults => "control/proplet/invoke_results",
            Topic::Metrics => "control/proplet/metrics",
            Topic::TaskMetrics => "control/proplet/task_metrics",
            Topic::Start => "control/manager/start",
            Topic::Stop => "control/manager/stop",
            Topic::Invoke => "control/manager/invoke",
            Topic::RegistryRequest => "registry/proplet",
            Topic::RegistryChunk => "registry/server",
        }
    }

    /// The topic whose [`Topic::suffix`] is `suffix`.
    pub fn from_suffix(suffix: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.suffix() == suffix)
    }
}

/// Renders and parses full topic names for one tenant (domain) and channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    base: String,
}

impl Topics {
    /// Topics under `m/{tenant}/c/{channel}`.
    pub fn new(tenant: &str, channel: &str) -> Self {
        Topics {
            base: format!("m/{tenant}/c/{channel}"),
        }
    }

    /// The channel base, `m/{tenant}/c/{channel}`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full topic name of `topic`.
    pub fn render(&self, topic: Topic) -> String {
        format!("{}/{}", self.base, topic.suffix())
    }

    /// The [`Topic`] that `name` names under this base, if any (exact match only).
    pub fn parse(&self, name: &str) -> Option<Topic> {
        let rest = name.strip_prefix(self.base.as_str())?.strip_prefix('/')?;
        Topic::ALL.into_iter().find(|t| t.suffix() == rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    const C: &str = "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d";

    #[test]
    fn renders_protocol_topics() {
        let t = Topics::new(A, C);
        assert_eq!(
            t.render(Topic::Start),
            format!("m/{A}/c/{C}/control/manager/start")
        );
        assert_eq!(
            t.render(Topic::RegistryChunk),
            format!("m/{A}/c/{C}/registry/server")
        );
        assert_eq!(
            t.render(Topic::InvokeResults),
            format!("m/{A}/c/{C}/control/proplet/invoke_results")
        );
    }

    #[test]
    fn parse_round_trips_every_topic() {
        let t = Topics::new(A, C);
        for topic in Topic::ALL {
            assert_eq!(t.parse(&t.render(topic)), Some(topic));
        }
    }

    #[test]
    fn parse_rejects_substrings_and_foreign_bases() {
        let t = Topics::new(A, C);
        assert_eq!(
            t.parse(&format!("m/{A}/c/{C}/control/manager/start/extra")),
            None
        );
        assert_eq!(
            t.parse(&format!("m/{A}/c/other/control/manager/start")),
            None
        );
        assert_eq!(
            t.parse(&format!("x/m/{A}/c/{C}/control/manager/start")),
            None
        );
        assert_eq!(t.parse(&format!("m/{A}/c/{C}control/manager/start")), None);
    }
}
