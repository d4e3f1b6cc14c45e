//! The task that owns rumqttc's `EventLoop`.

use tokio::time::Instant;

use super::*;

/// Reconnect delays: 250 ms doubling to 30 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
}

/// Polls until the forwarder has queued the offline notice and everything queued has been
/// acknowledged (or `timeout` passed since closing began), then disconnects.
pub(super) async fn run_loop(
    mut el: EventLoop,
    mut st: LoopState,
    mut finish: oneshot::Receiver<()>,
    timeout: Duration,
) {
    let mut backoff = backoff();
    let mut deadline: Option<Instant> = None;
    loop {
        if deadline.is_none()
            && !matches!(finish.try_recv(), Err(oneshot::error::TryRecvError::Empty))
        {
            deadline = Some(Instant::now() + timeout);
        }
        if let Some(d) = deadline {
            if st.flushed(&el) {
                disconnect(&mut el, &st, d).await;
                return;
            }
            if Instant::now() >= d {
                warn!("closing the MQTT session with messages still unacknowledged");
                return;
            }
        }
        let event = match deadline {
            Some(d) => match tokio::time::timeout_at(d, el.poll()).await {
                Ok(event) => event,
                Err(_) => continue,
            },
            None => tokio::select! {
                biased;
                _ = st.abandoned.cancelled() => return,
                event = el.poll() => event,
            },
        };
        match event {
            Ok(event) => {
                st.on_event(event, &mut el, &mut backoff);
                st.expedite_heartbeat(&mut el);
            }
            Err(e) => {
                st.on_error(&mut el, &e);
                let delay = backoff.next_delay();
                let wake =
                    deadline.map_or(Instant::now() + delay, |d| d.min(Instant::now() + delay));
                tokio::time::sleep_until(wake).await;
            }
        }
    }
}

async fn disconnect(el: &mut EventLoop, st: &LoopState, deadline: Instant) {
    if st.client.try_disconnect().is_err() {
        return;
    }
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, el.poll()).await {
        if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
            info!("disconnected from the MQTT broker");
            return;
        }
    }
}

/// Registers `pkid` as an incoming QoS 2 message awaiting its release, as if its PUBLISH
/// had arrived on this connection, so that the broker's PUBREL for it is answered with
/// PUBCOMP (completing the exchange) instead of dropping the connection. Called right after
/// CONNACK, before anything is read. The PUBREC that rumqttc would send (the broker is past
/// it) and the synthetic event are discarded.
fn expect_release(el: &mut EventLoop, pkid: u16) {
    let mut stand_in = Publish::new("", QoS::ExactlyOnce, Vec::new());
    stand_in.pkid = pkid;
    let events = el.state.events.len();
    match el.state.handle_incoming_packet(Packet::Publish(stand_in)) {
        Ok(_) => info!(
            pkid,
            "expecting the release of a QoS 2 message a previous process received"
        ),
        Err(e) => warn!(pkid, error = %e, "cannot expect the release of a QoS 2 message"),
    }
    el.state.events.truncate(events);
}

/// Whether the connection died on an incoming packet larger than we accept.
fn is_oversized(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_)
        ))
    )
}

impl LoopState {
    fn on_event(&mut self, event: Event, el: &mut EventLoop, backoff: &mut Backoff) {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                info!(
                    session_present = ack.session_present,
                    "connected to the MQTT broker"
                );
                backoff.reset();
                self.failures.connected();
                self.on_connected(ack.session_present, el);
            }
            Event::Incoming(Packet::SubAck(ack)) => {
                if ack
                    .return_codes
                    .iter()
                    .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                {
                    warn!("the broker refused a subscription; check the ACL for this proplet");
                }
                if !self.announced {
                    self.announce(el);
                }
            }
            Event::Incoming(Packet::Publish(p)) => self.dispatch(&p),
            Event::Outgoing(Outgoing::Publish(_)) => self.published += 1,
            _ => {}
        }
    }

    /// Replays what a lost session dropped, then subscribes (announcing on the SUBACK).
    fn on_connected(&mut self, session_present: bool, el: &mut EventLoop) {
        self.announced = false;
        self.metrics.connected(true);
        el.mqtt_options.set_clean_session(self.clean_session);
        let saved = std::mem::take(&mut self.saved);
        if !session_present && !saved.is_empty() {
            info!(
                count = saved.len(),
                "replaying publishes the broker did not acknowledge"
            );
            self.flush
                .enqueued
                .fetch_add(saved.len() as u64, Ordering::Relaxed);
            el.pending.extend(saved.into_iter().map(|mut p| {
                p.pkid = 0;
                p.dup = false;
                Request::Publish(p)
            }));
        }
        for pkid in std::mem::take(&mut self.unreleased) {
            expect_release(el, pkid);
        }
        let open = self.intake_open.load(Ordering::Relaxed);
        let filters: Vec<SubscribeFilter> = Topic::SUBSCRIPTIONS
            .into_iter()
            .filter(|t| open || !matches!(t, Topic::Start | Topic::Invoke))
            .map(|t| SubscribeFilter::new(self.topics.render(t), self.qos))
            .collect();
        // Straight into the event loop's own queue, ahead of everything: unlike the client's
        // bounded channel it is never full, so the subscription is never dropped.
        let subscribe = Subscribe::new_many(filters);
        el.pending.push_front(Request::Subscribe(subscribe));
    }

    /// Announces the proplet (discovery), ahead of anything queued, and signals `ready`.
    fn announce(&mut self, el: &mut EventLoop) {
        self.announced = true;
        let topic = self.topics.render(Topic::Create);
        let discovery = Publish::new(topic, self.qos, self.discovery.clone());
        el.pending.push_front(Request::Publish(discovery));
        self.flush.enqueued.fetch_add(1, Ordering::Relaxed);
        self.ready_tx.send_modify(|generation| *generation += 1);
    }

    /// Decodes and queues a message for the task manager, without ever waiting: the queue
    /// is unbounded and the manager answers what it cannot take (`overloaded`).
    fn dispatch(&self, p: &Publish) {
        let Some(topic) = self.topics.parse(&p.topic) else {
            debug!(topic = %p.topic, "ignoring a message on an unexpected topic");
            return;
        };
        let msg = protocol::decode(topic, &p.payload);
        if self.inbound_tx.send(msg).is_err() {
            debug!(
                "inbound queue closed; dropping a message on {}",
                topic.suffix()
            );
        }
    }

    fn on_error(&mut self, el: &mut EventLoop, e: &ConnectionError) {
        self.metrics.connected(false);
        self.failures.report(e);
        if let ConnectionError::MqttState(StateError::Unsolicited(pkid)) = e {
            // After a restart, the broker re-sends the release (PUBREL) of a QoS 2 message
            // that a previous process acknowledged (PUBREC) before it died; rumqttc knows
            // nothing of it and drops the connection. Expect it on the next connection.
            if !self.unreleased.contains(pkid) {
                self.unreleased.push(*pkid);
            }
        }
        if is_oversized(e) {
            // The broker would redeliver the oversized message on every resumed session and
            // the connection would never stay up: start the next session clean to drop it.
            warn!(
                "an incoming message exceeded PROPLET_MQTT_MAX_PACKET_SIZE; dropping it with a clean session"
            );
            el.mqtt_options.set_clean_session(true);
        }
        self.saved = el
            .pending
            .iter()
            .filter_map(|r| match r {
                Request::Publish(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
    }

    /// A new heartbeat, when rumqttc takes no publish from its queue (every in-flight slot
    /// is taken, or a packet id collided), would wait there behind results until the
    /// broker catches up. Put it in front of every request instead, at QoS 0: it needs no
    /// in-flight slot and a heartbeat needs no acknowledgement (a lost one is replaced by
    /// the next). The forwarder's copy still follows; a late duplicate beat is harmless.
    fn expedite_heartbeat(&mut self, el: &mut EventLoop) {
        let blocked =
            el.state.inflight() >= el.mqtt_options.inflight() || el.state.collision.is_some();
        if !blocked || !self.heartbeats.has_changed().unwrap_or(false) {
            return;
        }
        let Some(beat) = self.heartbeats.borrow_and_update().clone() else {
            return;
        };
        let topic = self.topics.render(beat.topic());
        let publish = Publish::new(topic, QoS::AtMostOnce, beat.into_payload());
        el.pending.push_front(Request::Publish(publish));
        self.flush.enqueued.fetch_add(1, Ordering::Relaxed);
        debug!("heartbeat expedited past the client's queue");
    }

    fn flushed(&self, el: &EventLoop) -> bool {
        self.published >= self.flush.enqueued.load(Ordering::Relaxed) && el.state.inflight() == 0
    }
}
