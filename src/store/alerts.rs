//! Alert storage: settings per subscriber, the delivery queue, and which nodes a
//! subscriber was told are offline. Events are queued inside the writer's transaction, by
//! the same job that makes the change they report, so an acknowledged change never loses
//! its alert and a rolled-back one never sends one.

use redb::{ReadableTable, ReadableTableMetadata};
use serde_json::{json, Value};

use super::codec::{decode, encode};
use super::error::StoreResult;
use super::queries::Reader;
use super::tables::*;
use super::Batch;
use crate::domain::alert::{AlertSettings, EventType, QueuedAlert, Subscriber};
use crate::domain::ids::new_id;
use crate::domain::timefmt::rfc3339_us;

/// One subscriber's settings, from either kind of transaction.
fn settings_in(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    subscriber_key: &str,
) -> StoreResult<Option<AlertSettings>> {
    let v = t.get(subscriber_key)?;
    v.map(|v| decode(v.value())).transpose()
}

impl Batch<'_> {
    pub fn alert_settings(&self, subscriber_key: &str) -> StoreResult<Option<AlertSettings>> {
        settings_in(&self.txn.open_table(ALERT_SETTINGS)?, subscriber_key)
    }

    /// Whether any subscriber has set a webhook: bulk jobs skip the per-item lookups when
    /// nobody listens.
    pub fn any_alert_settings(&self) -> StoreResult<bool> {
        Ok(!self.txn.open_table(ALERT_SETTINGS)?.is_empty()?)
    }

    pub fn put_alert_settings(
        &mut self,
        subscriber_key: &str,
        settings: &AlertSettings,
    ) -> StoreResult<()> {
        self.txn
            .open_table(ALERT_SETTINGS)?
            .insert(subscriber_key, encode(settings).as_slice())?;
        Ok(())
    }

    /// Removes a subscriber's settings with everything still owed to it (queued deliveries,
    /// pending `node.online`s): with no webhook there is nowhere to send them.
    pub fn delete_alert_settings(&mut self, subscriber_key: &str) -> StoreResult<bool> {
        let existed = self
            .txn
            .open_table(ALERT_SETTINGS)?
            .remove(subscriber_key)?
            .is_some();
        let mut queue = self.txn.open_table(ALERT_QUEUE)?;
        let before = queue.len()?;
        queue.retain(|_, v| {
            decode::<QueuedAlert>(v).map_or(true, |a| a.subscriber_key != subscriber_key)
        })?;
        let removed = before - queue.len()?;
        drop(queue);
        self.add_counter(ALERTS_QUEUED_COUNTER, -(removed as i64))?;
        let mut sent = self.txn.open_table(ALERT_OFFLINE_SENT)?;
        sent.retain(|(sub, _), _| sub != subscriber_key)?;
        Ok(existed)
    }

    /// Queues `event` about a node for everyone subscribed to it: the node's operator and
    /// the fleet-wide hook. Returns how many deliveries were queued.
    pub fn raise_alert(
        &mut self,
        event: EventType,
        node_id: &str,
        operator_id: &str,
        detail: Value,
    ) -> StoreResult<usize> {
        let mut queued = 0;
        for subscriber in Subscriber::for_operator(operator_id) {
            let key = subscriber.key();
            if let Some(settings) = self.alert_settings(&key)? {
                if settings.wants(event) {
                    self.queue_alert(&key, event, node_id, operator_id, detail.clone())?;
                    queued += 1;
                }
            }
        }
        Ok(queued)
    }

    /// Queues one delivery to one subscriber.
    pub fn queue_alert(
        &mut self,
        subscriber_key: &str,
        event: EventType,
        node_id: &str,
        operator_id: &str,
        detail: Value,
    ) -> StoreResult<()> {
        let now = self.now_us();
        let event_id = new_id("evt");
        let body = json!({
            "event_id": event_id,
            "type": event.as_str(),
            "at": rfc3339_us(now),
            "node_id": node_id,
            "operator_id": operator_id,
            "detail": detail,
        })
        .to_string();
        let alert = QueuedAlert {
            event_id,
            subscriber_key: subscriber_key.to_string(),
            event_type: event,
            body,
            created_at_us: now,
            attempts: 0,
            next_attempt_at_us: now,
            last_error: None,
        };
        let seq = self.meta_u64(ALERT_SEQ_KEY)?.unwrap_or(0) + 1;
        self.txn
            .open_table(ALERT_QUEUE)?
            .insert(seq, encode(&alert).as_slice())?;
        self.set_meta_u64(ALERT_SEQ_KEY, seq)?;
        self.add_counter(ALERTS_QUEUED_COUNTER, 1)
    }

    pub fn queued_alert(&self, seq: u64) -> StoreResult<Option<QueuedAlert>> {
        let t = self.txn.open_table(ALERT_QUEUE)?;
        let v = t.get(seq)?;
        v.map(|v| decode(v.value())).transpose()
    }

    pub fn update_queued_alert(&mut self, seq: u64, alert: &QueuedAlert) -> StoreResult<()> {
        self.txn
            .open_table(ALERT_QUEUE)?
            .insert(seq, encode(alert).as_slice())?;
        Ok(())
    }

    /// Removes a delivery (acknowledged, expired, or its subscriber gone).
    pub fn remove_queued_alert(&mut self, seq: u64) -> StoreResult<bool> {
        let removed = self.txn.open_table(ALERT_QUEUE)?.remove(seq)?.is_some();
        if removed {
            self.add_counter(ALERTS_QUEUED_COUNTER, -1)?;
        }
        Ok(removed)
    }

    pub fn offline_alert_sent(&self, subscriber_key: &str, node_id: &str) -> StoreResult<bool> {
        let t = self.txn.open_table(ALERT_OFFLINE_SENT)?;
        let sent = t.get((subscriber_key, node_id))?.is_some();
        Ok(sent)
    }

    pub fn set_offline_alert_sent(
        &mut self,
        subscriber_key: &str,
        node_id: &str,
        sent: bool,
    ) -> StoreResult<()> {
        let now = self.now_us();
        let mut t = self.txn.open_table(ALERT_OFFLINE_SENT)?;
        if sent {
            t.insert((subscriber_key, node_id), now)?;
        } else {
            t.remove((subscriber_key, node_id))?;
        }
        Ok(())
    }
}

impl Reader {
    pub fn alert_settings(&self, subscriber_key: &str) -> StoreResult<Option<AlertSettings>> {
        settings_in(&self.txn.open_table(ALERT_SETTINGS)?, subscriber_key)
    }

    /// Every subscriber's settings (a handful: one per operator who set a webhook).
    pub fn all_alert_settings(&self) -> StoreResult<Vec<(String, AlertSettings)>> {
        let t = self.txn.open_table(ALERT_SETTINGS)?;
        let mut all = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            all.push((k.value().to_string(), decode(v.value())?));
        }
        Ok(all)
    }

    /// Every (subscriber key, node_id) that was told a node is offline.
    pub fn offline_alerts_sent(&self) -> StoreResult<Vec<(String, String)>> {
        let t = self.txn.open_table(ALERT_OFFLINE_SENT)?;
        let mut all = Vec::new();
        for entry in t.iter()? {
            let (k, _) = entry?;
            let (sub, node) = k.value();
            all.push((sub.to_string(), node.to_string()));
        }
        Ok(all)
    }

    /// Deliveries due at `now`, oldest first, at most `limit`.
    pub fn due_alerts(
        &self,
        now_us: u64,
        limit: usize,
        keep: impl Fn(&QueuedAlert) -> bool,
    ) -> StoreResult<Vec<(u64, QueuedAlert)>> {
        let t = self.txn.open_table(ALERT_QUEUE)?;
        let mut due = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let alert: QueuedAlert = decode(v.value())?;
            if alert.next_attempt_at_us <= now_us && keep(&alert) {
                due.push((k.value(), alert));
                if due.len() == limit {
                    break;
                }
            }
        }
        Ok(due)
    }
}
