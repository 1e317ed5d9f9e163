//! Alerts: who wants word of what, when a silent node deserves a message, what the message
//! says, and how long to wait before trying again. Pure rules; storage and delivery live in
//! `store::alerts` and `app::alerts`.

use serde::{Deserialize, Serialize};

use super::node::{Node, NodeStatus};

/// The events an alert webhook can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    NodeOffline,
    NodeOnline,
    PayoutCreated,
    PayoutConfirmed,
    PayoutFailed,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::NodeOffline,
        EventType::NodeOnline,
        EventType::PayoutCreated,
        EventType::PayoutConfirmed,
        EventType::PayoutFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::NodeOffline => "node.offline",
            EventType::NodeOnline => "node.online",
            EventType::PayoutCreated => "payout.created",
            EventType::PayoutConfirmed => "payout.confirmed",
            EventType::PayoutFailed => "payout.failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }
}

/// Whose settings: one operator's (their nodes), or the admin's fleet-wide hook (all nodes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subscriber {
    Operator(String),
    Fleet,
}

impl Subscriber {
    /// The storage key. The prefix keeps an operator literally named `fleet` apart.
    pub fn key(&self) -> String {
        match self {
            Subscriber::Operator(id) => format!("operator:{id}"),
            Subscriber::Fleet => "fleet".to_string(),
        }
    }

    /// Everyone who may hear about a node of `operator_id`.
    pub fn for_operator(operator_id: &str) -> [Subscriber; 2] {
        [
            Subscriber::Operator(operator_id.to_string()),
            Subscriber::Fleet,
        ]
    }
}

pub const DEFAULT_OFFLINE_AFTER_SECONDS: u64 = 300;
/// A week: longer would rather be "never", which is what leaving the event out means.
pub const MAX_OFFLINE_AFTER_SECONDS: u64 = 7 * 86_400;
pub const MAX_SECRET_LEN: usize = 256;
pub const MAX_URL_LEN: usize = 2048;

/// One subscriber's alert webhook, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertSettings {
    pub webhook_url: String,
    pub secret: String,
    pub offline_after_seconds: u64,
    pub events: Vec<EventType>,
    pub updated_at_us: u64,
}

impl AlertSettings {
    pub fn wants(&self, event: EventType) -> bool {
        self.events.contains(&event)
    }
}

/// What a `PUT /alerts` asks for, before validation. `secret` may be left out when one is
/// already set (it is never shown again, so a client cannot send it back).
#[derive(Debug, Clone, Default)]
pub struct SettingsRequest {
    pub webhook_url: String,
    pub secret: Option<String>,
    pub offline_after_seconds: Option<u64>,
    pub events: Option<Vec<String>>,
}

/// Validates a request against the settings already stored (for the secret).
pub fn validate_settings(
    req: SettingsRequest,
    current: Option<&AlertSettings>,
    now_us: u64,
) -> Result<AlertSettings, String> {
    let url = req.webhook_url.trim();
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("webhook_url must be an http:// or https:// URL")?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || url.len() > MAX_URL_LEN || url.chars().any(|c| c.is_whitespace()) {
        return Err(format!(
            "webhook_url must be an http:// or https:// URL with a host, at most {MAX_URL_LEN} characters, no spaces"
        ));
    }
    let secret = match (req.secret, current) {
        (Some(s), _) if s.is_empty() || s.len() > MAX_SECRET_LEN => {
            return Err(format!("secret must be 1 to {MAX_SECRET_LEN} characters"))
        }
        (Some(s), _) => s,
        (None, Some(c)) => c.secret.clone(),
        (None, None) => {
            return Err("secret is required (it signs every delivery: X-Lucid-Signature)".into())
        }
    };
    let offline_after_seconds = req
        .offline_after_seconds
        .unwrap_or(DEFAULT_OFFLINE_AFTER_SECONDS);
    if !(1..=MAX_OFFLINE_AFTER_SECONDS).contains(&offline_after_seconds) {
        return Err(format!(
            "offline_after_seconds must be between 1 and {MAX_OFFLINE_AFTER_SECONDS}"
        ));
    }
    let events = match req.events {
        None => EventType::ALL.to_vec(),
        Some(names) => {
            let mut events = Vec::new();
            for name in &names {
                let e = EventType::parse(name).ok_or_else(|| {
                    format!(
                        "unknown event {name:?}; expected some of {}",
                        EventType::ALL.map(EventType::as_str).join(", ")
                    )
                })?;
                if !events.contains(&e) {
                    events.push(e);
                }
            }
            events
        }
    };
    Ok(AlertSettings {
        webhook_url: url.to_string(),
        secret,
        offline_after_seconds,
        events,
        updated_at_us: now_us,
    })
}

/// A node deserves a `node.offline` message once it is offline and has been silent for the
/// grace: a node that blips offline and comes back within it is never reported.
pub fn offline_alert_due(node: &Node, offline_after_seconds: u64, now_us: u64) -> bool {
    let silent_since = node.last_heartbeat_at_us.unwrap_or(node.registered_at_us);
    node.status == NodeStatus::Offline
        && silent_since.saturating_add(offline_after_seconds.saturating_mul(1_000_000)) <= now_us
}

/// A `node.online` follows only an `offline` that was sent, once the node is online again.
pub fn online_alert_due(node: &Node) -> bool {
    node.status == NodeStatus::Online
}

/// A delivery waiting in the queue. The body is fixed when the event is written, so every
/// attempt sends the same bytes (and the same `event_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedAlert {
    pub event_id: String,
    pub subscriber_key: String,
    pub event_type: EventType,
    pub body: String,
    pub created_at_us: u64,
    pub attempts: u32,
    pub next_attempt_at_us: u64,
    pub last_error: Option<String>,
}

/// Delay before attempt `attempts + 1`: `base` doubling per failed attempt, at most
/// `max_delay`. Never zero, never overflows.
pub fn retry_delay_us(base_us: u64, max_delay_us: u64, attempts: u32) -> u64 {
    let factor = 1u64
        .checked_shl(attempts.saturating_sub(1).min(62))
        .unwrap_or(u64::MAX);
    base_us
        .max(1)
        .saturating_mul(factor)
        .min(max_delay_us.max(1))
}

/// Whether a delivery that keeps failing should be given up: after `max_age` since the
/// event was written.
pub fn expired(alert: &QueuedAlert, max_age_us: u64, now_us: u64) -> bool {
    alert.created_at_us.saturating_add(max_age_us) <= now_us
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn node(status: NodeStatus, last: Option<u64>) -> Node {
        Node {
            node_id: "node_a".into(),
            name: "a".into(),
            operator_id: "op".into(),
            public_key: [0; 32],
            payout_address: None,
            region: None,
            pool_id: None,
            status,
            registered_at_us: 1_000,
            last_heartbeat_at_us: last,
            balance_usdt: Default::default(),
            operational_seconds_total: 0,
            token_generation: 0,
            last_seq: None,
            credit_carry: Default::default(),
            last_proof: None,
            credits_pending_usdt: Default::default(),
            credits_pending_day: 0,
        }
    }

    fn req(url: &str) -> SettingsRequest {
        SettingsRequest {
            webhook_url: url.into(),
            secret: Some("s3cret".into()),
            ..Default::default()
        }
    }

    #[test]
    fn event_names_round_trip() {
        for e in EventType::ALL {
            assert_eq!(EventType::parse(e.as_str()), Some(e));
        }
        assert_eq!(EventType::parse("node.deleted"), None);
    }

    #[test]
    fn settings_default_to_five_minutes_and_every_event() {
        let s = validate_settings(req("https://hooks.example/x"), None, 7).unwrap();
        assert_eq!(s.offline_after_seconds, 300);
        assert_eq!(s.events, EventType::ALL.to_vec());
        assert_eq!(s.updated_at_us, 7);
    }

    #[test]
    fn settings_accept_http_on_the_local_network() {
        assert!(validate_settings(req("http://192.168.1.5:8080/hook"), None, 0).is_ok());
    }

    #[test]
    fn settings_refuse_other_schemes_empty_hosts_and_spaces() {
        for url in [
            "ftp://x",
            "https://",
            "http:///path",
            "https://a b",
            "hooks.example",
        ] {
            assert!(validate_settings(req(url), None, 0).is_err(), "{url}");
        }
    }

    #[test]
    fn settings_need_a_secret_the_first_time_only() {
        let mut r = req("https://h/x");
        r.secret = None;
        assert!(validate_settings(r.clone(), None, 0).is_err());
        let current = validate_settings(req("https://h/x"), None, 0).unwrap();
        let kept = validate_settings(r, Some(&current), 0).unwrap();
        assert_eq!(kept.secret, "s3cret");
        let mut empty = req("https://h/x");
        empty.secret = Some(String::new());
        assert!(validate_settings(empty, Some(&current), 0).is_err());
    }

    #[test]
    fn settings_refuse_zero_grace_and_unknown_events() {
        let mut r = req("https://h/x");
        r.offline_after_seconds = Some(0);
        assert!(validate_settings(r, None, 0).is_err());
        let mut r = req("https://h/x");
        r.events = Some(vec!["node.offline".into(), "node.exploded".into()]);
        let err = validate_settings(r, None, 0).unwrap_err();
        assert!(err.contains("node.exploded"), "{err}");
        let mut r = req("https://h/x");
        r.events = Some(vec!["payout.failed".into(), "payout.failed".into()]);
        assert_eq!(
            validate_settings(r, None, 0).unwrap().events,
            vec![EventType::PayoutFailed]
        );
    }

    #[test]
    fn offline_alert_waits_for_the_grace() {
        let n = node(NodeStatus::Offline, Some(10_000_000));
        assert!(!offline_alert_due(&n, 300, 10_000_000 + 299_999_999));
        assert!(offline_alert_due(&n, 300, 10_000_000 + 300_000_000));
        // Online or suspended nodes are not "offline" whatever their silence.
        assert!(!offline_alert_due(
            &node(NodeStatus::Online, Some(0)),
            1,
            u64::MAX
        ));
        assert!(!offline_alert_due(
            &node(NodeStatus::Suspended, Some(0)),
            1,
            u64::MAX
        ));
    }

    #[test]
    fn subscriber_keys_keep_an_operator_named_fleet_apart() {
        assert_ne!(
            Subscriber::Operator("fleet".into()).key(),
            Subscriber::Fleet.key()
        );
    }

    proptest! {
        #[test]
        fn retry_delay_doubles_up_to_the_cap(base in 1u64..10_000_000, cap in 1u64..u64::MAX / 2, n in 1u32..200) {
            let d = retry_delay_us(base, cap, n);
            let next = retry_delay_us(base, cap, n + 1);
            prop_assert!(d >= 1 && d <= cap.max(1));
            prop_assert!(next >= d);
            prop_assert!(next == cap || next == d * 2 || d == cap);
        }
    }
}
