//! The session loop: connect (through rumqttc), serve the connection (ourselves, with
//! rumqttc's protocol state), and connect again after a failure.
//!
//! While serving, the loop waits on the network, the outbox, its commands and the
//! keep-alive only; every wait is cancel-safe, and everything it writes is written outside
//! those waits, so that no packet is ever half-handled. What one turn of the loop writes
//! (acknowledgements, results, a ping) leaves in one flush, just before the next wait: under
//! a burst, one write to the socket carries many packets, for us and for the broker.

use futures::FutureExt as _;
use rumqttc::{Disconnect, PingReq, Unsubscribe};

use super::inflight::kept_or_stale;
use super::*;

/// Reconnect delays: 250 ms doubling to 30 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(250), Duration::from_secs(30))
}

/// Incoming packets handled in one turn of the loop (their replies leave together), and
/// messages taken from the outbox in one turn at QoS 0.
const READ_BATCH: usize = 10;

/// What the loop waited for.
enum Step {
    Abandoned,
    Deadline,
    Command(Option<Command>),
    Handled(Option<Delivery>),
    Read(Result<Incoming, StateError>),
    Ping,
    Beat(Option<Encoded>),
    Message(Option<Encoded>),
}

/// Connects, serves, reconnects, until closed (or abandoned).
pub(super) async fn run_loop(mut el: EventLoop, mut st: LoopState, mut inputs: Inputs) {
    let mut backoff = backoff();
    let mut retry_at = Instant::now();
    loop {
        if st.closing.is_some() && st.nothing_to_lose() {
            return st.leave_offline();
        }
        let connect = async {
            tokio::time::sleep_until(retry_at).await;
            el.poll().await
        };
        let polled = tokio::select! {
            biased;
            _ = st.abandoned.cancelled() => return,
            _ = until(st.closing) => return warn!("closing the MQTT session: the broker stayed away"),
            cmd = inputs.commands.recv() => {
                match cmd {
                    Some(cmd) => st.command(cmd, &mut inputs.outbox),
                    None => return,
                }
                continue;
            }
            polled = connect => polled,
        };
        let served = match polled {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff.reset();
                st.failures.connected();
                serve(&mut el, &mut st, &mut inputs, ack.session_present).await
            }
            Ok(other) => {
                debug!(?other, "MQTT event before the connection was acknowledged");
                continue;
            }
            Err(e) => Err(e),
        };
        match served {
            Ok(()) => return,
            Err(e) => {
                st.on_error(&mut el, &e);
                retry_at = Instant::now() + backoff.next_delay();
            }
        }
    }
}

/// Resolves at `deadline`; never without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Serves one connection until it fails, or the session is closed (or abandoned).
async fn serve(
    el: &mut EventLoop,
    st: &mut LoopState,
    inputs: &mut Inputs,
    resumed: bool,
) -> Result<(), ConnectionError> {
    st.on_connected(el, resumed).await?;
    let mut ping = Box::pin(tokio::time::sleep(st.keep_alive));
    loop {
        st.on_events(el);
        // A heartbeat waiting is sent now, even while the network keeps the loop busy.
        if let Some(beat) = inputs.outbox.take_beat().filter(|_| st.outbox_open) {
            st.heartbeat(el, beat).await?;
        }
        st.send_queued(el).await?;
        st.flush_turn(el).await?;
        if st.closing.is_some() && st.backlog.is_empty() && st.inflight.is_empty() {
            disconnect(el, st.timeout).await;
            return Ok(());
        }
        let Some(network) = el.network.as_mut() else {
            return Err(ConnectionError::RequestsDone);
        };
        // With every packet id taken, only a heartbeat is taken from the outbox.
        let beat_only = st.qos != QoS::AtMostOnce && st.inflight.is_full();
        let step = tokio::select! {
            biased;
            _ = st.abandoned.cancelled() => Step::Abandoned,
            _ = until(st.closing) => Step::Deadline,
            cmd = inputs.commands.recv() => Step::Command(cmd),
            handled = inputs.handled.recv(), if inputs.handled_open => Step::Handled(handled),
            read = network.read() => Step::Read(read),
            // A keep-alive of zero turns pings off (as in MQTT).
            _ = &mut ping, if !st.keep_alive.is_zero() => Step::Ping,
            msg = inputs.outbox.next(beat_only), if st.outbox_open => match beat_only {
                true => Step::Beat(msg),
                false => Step::Message(msg),
            },
        };
        match step {
            Step::Abandoned | Step::Command(None) => return Ok(()),
            Step::Deadline => {
                warn!("closing the MQTT session with messages still unacknowledged");
                return Ok(());
            }
            Step::Command(Some(cmd)) => st.command(cmd, &mut inputs.outbox),
            Step::Handled(Some(delivery)) => st.acknowledge(delivery),
            // The reader is gone (the worker is stopping): nothing more to acknowledge.
            Step::Handled(None) => inputs.handled_open = false,
            Step::Read(read) => st.incoming(el, read?).await?,
            Step::Ping => {
                ping.as_mut().reset(Instant::now() + st.keep_alive);
                write(el, Request::PingReq(PingReq)).await?;
            }
            Step::Beat(Some(beat)) => st.expedite(el, beat).await?,
            Step::Message(Some(msg)) => st.backlog.push_back(msg),
            Step::Beat(None) | Step::Message(None) => st.outbox_open = false,
        }
        st.take_waiting(inputs);
    }
}

/// Hands `request` to rumqttc's protocol state and writes the packet it makes, if any.
async fn write(el: &mut EventLoop, request: Request) -> Result<(), ConnectionError> {
    match el.state.handle_outgoing_packet(request)? {
        Some(packet) => write_packet(el, packet).await,
        None => Ok(()),
    }
}

/// Writes out what is buffered, within `timeout`.
async fn flush(el: &mut EventLoop, timeout: Duration) -> Result<(), ConnectionError> {
    let Some(network) = el.network.as_mut() else {
        return Err(ConnectionError::RequestsDone);
    };
    match tokio::time::timeout(timeout, network.flush()).await {
        Ok(flushed) => Ok(flushed?),
        Err(_) => Err(ConnectionError::FlushTimeout),
    }
}

async fn disconnect(el: &mut EventLoop, timeout: Duration) {
    let sent = async {
        write(el, Request::Disconnect(Disconnect)).await?;
        flush(el, timeout).await
    };
    match sent.await {
        Ok(()) => info!("disconnected from the MQTT broker"),
        Err(e) => debug!(error = %e, "could not say goodbye to the MQTT broker"),
    }
}

/// Registers `pkid` as an incoming QoS 2 message awaiting its release, as if its PUBLISH
/// had arrived on this connection, so that the broker's PUBREL for it is answered with
/// PUBCOMP (completing the exchange, as MQTT asks of every PUBREL) instead of dropping the
/// connection. Called before each PUBREL is handled: rumqttc forgets the messages it
/// received with each connection, so the releases a resumed session brings (for an earlier
/// connection, or for a process that died) would each cost a reconnection, and a handful of
/// them arriving together would keep the proplet off the air for ever. The PUBREC that
/// rumqttc would send (the broker is past it) and the synthetic event are discarded.
fn expect_release(el: &mut EventLoop, pkid: u16) {
    let mut stand_in = Publish::new("", QoS::ExactlyOnce, Vec::new());
    stand_in.pkid = pkid;
    let events = el.state.events.len();
    match el.state.handle_incoming_packet(Packet::Publish(stand_in)) {
        Ok(_) => debug!(pkid, "expecting the release of a QoS 2 message"),
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
    /// Subscribes, then sends again what the last connection left unacknowledged (with the
    /// same packet ids: the broker may hold them), ahead of anything new.
    async fn on_connected(
        &mut self,
        el: &mut EventLoop,
        resumed: bool,
    ) -> Result<(), ConnectionError> {
        info!(session_present = resumed, "connected to the MQTT broker");
        self.announced = false;
        self.metrics.connected(true);
        el.mqtt_options.set_clean_session(self.clean_session);
        let open = self.intake_open.load(Ordering::Relaxed);
        let filters: Vec<SubscribeFilter> = Topic::SUBSCRIPTIONS
            .into_iter()
            .filter(|t| open || !matches!(t, Topic::Start | Topic::Invoke))
            .map(|t| SubscribeFilter::new(self.topics.render(t), self.qos))
            .collect();
        write(el, Request::Subscribe(Subscribe::new_many(filters))).await?;
        let unacknowledged = self.inflight.in_order();
        if !unacknowledged.is_empty() {
            info!(
                count = unacknowledged.len(),
                "sending again what the broker did not acknowledge"
            );
        }
        for (pkid, msg) in unacknowledged {
            if msg.topic() == Topic::Alive {
                // A stale heartbeat: the next one replaces it.
                self.inflight.acknowledged(pkid);
                continue;
            }
            write(el, Request::Publish(self.packet(&msg, pkid, resumed))).await?;
        }
        flush(el, self.timeout).await
    }

    /// The PUBLISH packet of `msg` under `pkid` (0 at QoS 0).
    fn packet(&self, msg: &Encoded, pkid: u16, dup: bool) -> Publish {
        Publish {
            dup,
            qos: if pkid == 0 { QoS::AtMostOnce } else { self.qos },
            retain: false,
            topic: self.topics.render(msg.topic()),
            pkid,
            payload: msg.bytes(),
        }
    }

    /// Writes control requests, then the backlog as far as free packet ids allow.
    async fn send_queued(&mut self, el: &mut EventLoop) -> Result<(), ConnectionError> {
        while let Some(request) = self.control.pop_front() {
            write(el, request).await?;
        }
        while let Some(next) = self.backlog.front() {
            let pkid = if self.qos == QoS::AtMostOnce {
                0
            } else {
                match self.inflight.insert(next.clone()) {
                    Some(pkid) => pkid,
                    None => break,
                }
            };
            let Some(msg) = self.backlog.pop_front() else {
                break;
            };
            write(el, Request::Publish(self.packet(&msg, pkid, false))).await?;
            if pkid == 0 {
                self.written_once.extend(msg.stored());
            }
            if msg.topic() == Topic::Alive {
                debug!("heartbeat sent");
            }
        }
        Ok(())
    }

    /// Flushes what this turn wrote (nothing to do when it wrote nothing). At QoS 0 a
    /// stored result is delivered once flushed.
    async fn flush_turn(&mut self, el: &mut EventLoop) -> Result<(), ConnectionError> {
        flush(el, self.timeout).await?;
        for seq in self.written_once.drain(..) {
            self.journal.delivered(seq);
        }
        Ok(())
    }

    /// Takes whatever else waits right now, acknowledgements due and messages to send, so
    /// that it leaves in this turn's flush: the acknowledgement of a start and the result
    /// that waited for the same commit go out in one write.
    fn take_waiting(&mut self, inputs: &mut Inputs) {
        if inputs.handled_open {
            while let Ok(delivery) = inputs.handled.try_recv() {
                self.acknowledge(delivery);
            }
        }
        if self.outbox_open {
            self.take_ready(&mut inputs.outbox);
        }
    }

    /// Takes into the backlog what else the outbox holds right now, as far as free packet
    /// ids allow (a turn's worth at QoS 0), so that it leaves in this turn's flush.
    fn take_ready(&mut self, outbox: &mut Outbox) {
        let room = match self.qos {
            QoS::AtMostOnce => READ_BATCH,
            _ => self.inflight.free(),
        };
        while self.backlog.len() < room {
            let Some(msg) = outbox.try_recv() else {
                return;
            };
            self.backlog.push_back(msg);
        }
    }

    /// Queues `beat` (the backlog is short while packet ids are free), or sends it at once
    /// at QoS 0 when every packet id is taken.
    async fn heartbeat(
        &mut self,
        el: &mut EventLoop,
        beat: Encoded,
    ) -> Result<(), ConnectionError> {
        if self.qos != QoS::AtMostOnce && self.inflight.is_full() {
            return self.expedite(el, beat).await;
        }
        self.backlog.push_back(beat);
        Ok(())
    }

    /// Writes `beat` at QoS 0, to leave in this turn's flush: every packet id is taken,
    /// and a heartbeat needs none (a lost one is replaced by the next).
    async fn expedite(&mut self, el: &mut EventLoop, beat: Encoded) -> Result<(), ConnectionError> {
        write(el, Request::Publish(self.packet(&beat, 0, false))).await?;
        debug!("heartbeat sent at QoS 0 past the messages awaiting acknowledgement");
        Ok(())
    }

    /// Handles `packet` and any others already received, and writes the replies (flushed
    /// with the rest of the turn).
    async fn incoming(
        &mut self,
        el: &mut EventLoop,
        packet: Incoming,
    ) -> Result<(), ConnectionError> {
        let mut next = Some(packet);
        let mut handled = 0;
        while let Some(packet) = next.take() {
            if let Packet::PubRel(rel) = &packet {
                expect_release(el, rel.pkid);
            }
            if let Some(reply) = el.state.handle_incoming_packet(packet)? {
                write_packet(el, reply).await?;
            }
            handled += 1;
            if handled < READ_BATCH {
                next = match el.network.as_mut().and_then(|n| n.read().now_or_never()) {
                    Some(read) => Some(read?),
                    None => None,
                };
            }
        }
        Ok(())
    }

    /// Acts on what rumqttc's protocol state reported.
    fn on_events(&mut self, el: &mut EventLoop) {
        while let Some(event) = el.state.events.pop_front() {
            match event {
                Event::Incoming(Packet::SubAck(ack)) => self.subscribed(&ack),
                Event::Incoming(Packet::Publish(p)) => self.dispatch(&p),
                Event::Incoming(Packet::PubAck(ack)) => self.acknowledged(ack.pkid),
                Event::Incoming(Packet::PubComp(comp)) => self.acknowledged(comp.pkid),
                _ => {}
            }
        }
    }

    /// The broker acknowledged `pkid`: a stored result leaves the durable outbox.
    fn acknowledged(&mut self, pkid: u16) {
        if let Some(seq) = self.inflight.acknowledged(pkid).and_then(|m| m.stored()) {
            self.journal.delivered(seq);
        }
    }

    fn subscribed(&mut self, ack: &rumqttc::SubAck) {
        if ack
            .return_codes
            .iter()
            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
        {
            warn!("the broker refused a subscription; check the ACL for this proplet");
        }
        if !self.announced {
            self.announce();
        }
    }

    /// Announces the proplet (discovery), ahead of anything queued, and signals `ready`.
    fn announce(&mut self) {
        self.announced = true;
        self.backlog.push_front(self.discovery.clone());
        self.ready_tx.send_modify(|generation| *generation += 1);
    }

    /// Decodes and queues a message for the task manager, without ever waiting: the queue
    /// is unbounded and the manager answers what it cannot take (`overloaded`). It is
    /// acknowledged to the broker once the worker says it is handled; one that does not
    /// reach the worker, at once.
    fn dispatch(&mut self, p: &Publish) {
        self.delivered += 1;
        let delivery = Delivery {
            seq: self.delivered,
            acknowledged: p.qos != QoS::AtMostOnce,
        };
        let ack = delivery
            .awaits_acknowledgement()
            .then_some((delivery, p.pkid, p.qos));
        self.unacknowledged.extend(ack);
        let Some(topic) = self.topics.parse(&p.topic) else {
            debug!(topic = %p.topic, "ignoring a message on an unexpected topic");
            return self.acknowledge(delivery);
        };
        let mut msg = match p.payload.len() > self.max_packet_size {
            true => Err(protocol::oversized(topic, &p.payload, self.max_packet_size)),
            false => protocol::decode_sharing(topic, &p.payload, &self.known_texts),
        };
        if let Ok(Inbound::Start(req)) = &mut msg {
            req.redelivered = p.dup;
        }
        if self.inbound_tx.send((delivery, msg)).is_err() {
            debug!(
                "inbound queue closed; dropping a message on {}",
                topic.suffix()
            );
            self.acknowledge(delivery);
        }
    }

    /// Acknowledges to the broker every message of this connection up to `delivery`.
    fn acknowledge(&mut self, delivery: Delivery) {
        while let Some(&(d, pkid, qos)) = self.unacknowledged.front() {
            if d > delivery {
                break;
            }
            self.unacknowledged.pop_front();
            let ack = match qos {
                QoS::ExactlyOnce => Request::PubRec(rumqttc::PubRec::new(pkid)),
                _ => Request::PubAck(rumqttc::PubAck::new(pkid)),
            };
            self.control.push_back(ack);
        }
    }

    /// Carries out a command of the session's owner.
    fn command(&mut self, cmd: Command, outbox: &mut Outbox) {
        match cmd {
            Command::Unsubscribe(topics) => {
                let unsubscribe = Unsubscribe { pkid: 0, topics };
                self.control.push_back(Request::Unsubscribe(unsubscribe));
            }
            Command::Close(offline) => {
                self.closing = Some(Instant::now() + self.timeout);
                self.outbox_open = false;
                while let Some(msg) = outbox.try_recv() {
                    self.backlog.push_back(msg);
                }
                self.backlog.push_back(Encoded::new(&offline));
            }
        }
    }

    /// Whether everything not yet acknowledged is kept in the durable outbox (or need not
    /// be delivered once the process is gone).
    fn nothing_to_lose(&self) -> bool {
        self.backlog.iter().all(kept_or_stale) && self.inflight.all_kept()
    }

    fn leave_offline(&self) {
        let kept = self.backlog.iter().filter(|m| m.stored().is_some()).count()
            + self
                .inflight
                .in_order()
                .iter()
                .filter(|(_, m)| m.stored().is_some())
                .count();
        info!(
            results = kept,
            "closing with the MQTT broker away: the results waiting stay in the durable outbox for the next start"
        );
    }

    fn on_error(&mut self, el: &mut EventLoop, e: &ConnectionError) {
        self.metrics.connected(false);
        self.failures.report(e);
        if is_oversized(e) {
            // The broker would redeliver the oversized message on every resumed session and
            // the connection would never stay up: start the next session clean to drop it.
            warn!(
                "an incoming message exceeded PROPLET_MQTT_MAX_PACKET_SIZE; dropping it with a clean session"
            );
            el.mqtt_options.set_clean_session(true);
        }
        // What the dead connection had already received still counts (acknowledgements
        // above all). What awaits acknowledgement is in our table, sent again on the next
        // connection; rumqttc's copy of it is dropped, and so are control requests (the
        // next connection subscribes afresh). Messages we had not acknowledged come again
        // (flagged DUP) on the next connection.
        self.on_events(el);
        el.network = None;
        drop(el.state.clean());
        self.control.clear();
        self.unacknowledged.clear();
        // Written at QoS 0 and perhaps never flushed: not counted as delivered.
        self.written_once.clear();
    }
}

/// Writes a packet rumqttc's protocol state made (an acknowledgement).
async fn write_packet(el: &mut EventLoop, packet: Packet) -> Result<(), ConnectionError> {
    match el.network.as_mut() {
        Some(network) => Ok(network.write(packet).await?),
        None => Err(ConnectionError::RequestsDone),
    }
}
