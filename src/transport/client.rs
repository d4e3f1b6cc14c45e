//! A short-lived MQTT client for the command line (`proplet submit`): it connects with the
//! proplet's own broker settings (address, TLS, credentials), publishes one message as the
//! manager would, and waits for the one reply that answers it.

use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS, SubscribeReasonCode,
    TlsConfiguration, Transport,
};

use super::TransportError;
use crate::config::{Identity, MqttConfig};

/// One message to publish and where its reply comes.
#[derive(Debug, Clone)]
pub struct Request {
    /// Topic to publish on.
    pub topic: String,
    /// The message.
    pub payload: Vec<u8>,
    /// Topic the reply comes on.
    pub reply_topic: String,
}

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker could not be reached, refused us, or dropped the connection.
    #[error("MQTT broker {address}: {reason}")]
    Broker {
        /// `host:port`.
        address: String,
        /// What went wrong.
        reason: String,
    },
    /// The broker refused the subscription to the reply topic (an ACL).
    #[error("the broker refused the subscription to {0}")]
    Refused(String),
    /// Nothing answered in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The TLS settings could not be used.
    #[error(transparent)]
    Setup(#[from] TransportError),
}

/// Publishes `request` and returns the first message on its reply topic that `is_reply`
/// accepts, waiting at most `wait` for it once published. The client id is the
/// configured one with a random suffix, so a running proplet with the same settings is
/// never disconnected by it.
pub async fn request(
    cfg: &MqttConfig,
    identity: &Identity,
    request: Request,
    is_reply: impl Fn(&[u8]) -> bool,
    wait: Duration,
) -> Result<Vec<u8>, ClientError> {
    let address = format!("{}:{}", cfg.address.host, cfg.address.port);
    let broker = |reason: String| ClientError::Broker {
        address: address.clone(),
        reason,
    };
    let (client, mut events) = AsyncClient::new(options(cfg, identity)?, 16);
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net.set_connection_timeout(cfg.timeout.as_secs().max(1));
    events.set_network_options(net);
    let qos = super::mqtt::qos(cfg.qos);
    client
        .try_subscribe(request.reply_topic.clone(), QoS::AtLeastOnce)
        .map_err(|e| broker(e.to_string()))?;
    let subscribed = tokio::time::timeout(cfg.timeout, until_subscribed(&mut events));
    match subscribed.await {
        Err(_) => return Err(broker(format!("no answer within {:?}", cfg.timeout))),
        Ok(Err(e)) => return Err(broker(e.to_string())),
        Ok(Ok(false)) => return Err(ClientError::Refused(request.reply_topic)),
        Ok(Ok(true)) => {}
    }
    client
        .try_publish(request.topic, qos, false, request.payload)
        .map_err(|e| broker(e.to_string()))?;
    let reply = tokio::time::timeout(
        wait,
        next_reply(&mut events, &request.reply_topic, is_reply),
    );
    let outcome = match reply.await {
        Err(_) => Err(ClientError::Timeout(wait)),
        Ok(Err(e)) => Err(broker(e.to_string())),
        Ok(Ok(payload)) => Ok(payload),
    };
    goodbye(&client, &mut events).await;
    outcome
}

fn options(cfg: &MqttConfig, identity: &Identity) -> Result<MqttOptions, TransportError> {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let client_id = format!("{}-submit-{}", identity.client_id, &suffix[..8]);
    let mut o = MqttOptions::new(client_id, &cfg.address.host, cfg.address.port);
    o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(5)))
        .set_clean_session(true)
        .set_max_packet_size(cfg.max_packet_size, cfg.max_packet_size);
    o.set_credentials(
        identity.proplet_id.clone(),
        identity.api_key.clone().unwrap_or_default(),
    );
    if cfg.address.tls {
        let tls = super::tls::client_config(&cfg.tls)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    Ok(o)
}

/// Polls until the subscription is answered: whether it was granted.
async fn until_subscribed(events: &mut EventLoop) -> Result<bool, ConnectionError> {
    loop {
        if let Event::Incoming(Packet::SubAck(ack)) = events.poll().await? {
            let refused = ack.return_codes.contains(&SubscribeReasonCode::Failure);
            return Ok(!refused);
        }
    }
}

/// Polls until a message on `topic` that `is_reply` accepts.
async fn next_reply(
    events: &mut EventLoop,
    topic: &str,
    is_reply: impl Fn(&[u8]) -> bool,
) -> Result<Vec<u8>, ConnectionError> {
    loop {
        if let Event::Incoming(Packet::Publish(p)) = events.poll().await?
            && p.topic == topic
            && is_reply(&p.payload)
        {
            return Ok(p.payload.to_vec());
        }
    }
}

/// Disconnects cleanly, briefly: the answer is in hand whatever happens now.
async fn goodbye(client: &AsyncClient, events: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let drained = async {
        while let Ok(event) = events.poll().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(1), drained)
        .await
        .ok();
}
