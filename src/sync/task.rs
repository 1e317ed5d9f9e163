//! The sync task: full copy when needed, then drain the outbox, forever; retries with
//! exponential backoff while MongoDB is unreachable. Never blocks a request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

use super::{plan, MirrorStatus, Plan};
use crate::app::AppState;
use crate::error::ApiError;
use crate::store::outbox::{Cursor, Op, OutboxEntry, COLLECTIONS};

/// Outbox entries (or snapshot documents) per round trip.
const BATCH: usize = 500;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often an idle task looks at the outbox, and checks MongoDB still answers.
const IDLE_POLL: Duration = Duration::from_millis(200);
const IDLE_PING: Duration = Duration::from_secs(5);

/// One line, bounded: for logs and `/health`.
pub fn short_error(e: &impl std::fmt::Display) -> String {
    let s = e.to_string();
    let line = s.lines().next().unwrap_or_default();
    line.chars().take(300).collect()
}

/// A driver error in one line, without the driver's debug decorations.
pub fn mongo_error(e: &mongodb::error::Error) -> String {
    short_error(&e.kind)
}

struct Mirror {
    db: Database,
    /// `{w: "majority"}` on a replica set; the server's default on a single node.
    write_concern: Option<Document>,
}

pub async fn run(app: AppState) {
    let Plan::On { uri, site_id } = plan(&app.config) else {
        return;
    };
    let status = app.metrics.mirror.clone();
    let mut backoff = FIRST_BACKOFF;
    loop {
        let err = match connect(&uri).await {
            Ok(mirror) => mirror_loop(&app, &mirror, &site_id, &status, &mut backoff).await,
            Err(e) => e,
        };
        let was_connected = status.connected.swap(false, Ordering::Relaxed);
        status.sync_errors.fetch_add(1, Ordering::Relaxed);
        status.set_reason(Some(err.clone()));
        if was_connected || backoff == FIRST_BACKOFF || backoff == MAX_BACKOFF {
            tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "MongoDB mirror: cannot sync, retrying (the appliance keeps serving; changes wait in the outbox)");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn connect(uri: &str) -> Result<Mirror, String> {
    let mut opts = ClientOptions::parse(uri)
        .await
        .map_err(|e| mongo_error(&e))?;
    opts.server_selection_timeout = Some(Duration::from_secs(3));
    opts.connect_timeout = Some(Duration::from_secs(3));
    if opts.app_name.is_none() {
        opts.app_name = Some(crate::SERVICE_NAME.to_string());
    }
    let client = Client::with_options(opts).map_err(|e| mongo_error(&e))?;
    let db = client
        .default_database()
        .unwrap_or_else(|| client.database("lucid"));
    let hello = db
        .run_command(doc! {"hello": 1})
        .await
        .map_err(|e| mongo_error(&e))?;
    let replicated = hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid");
    Ok(Mirror {
        db,
        write_concern: replicated.then(|| doc! {"w": "majority"}),
    })
}

/// Runs until MongoDB fails; returns why.
async fn mirror_loop(
    app: &AppState,
    mirror: &Mirror,
    site_id: &str,
    status: &MirrorStatus,
    backoff: &mut Duration,
) -> String {
    let max = app.config.outbox_max_entries;
    let mut last_ping = Instant::now();
    let mut first = true;
    loop {
        let reader = match app.store.reader() {
            Ok(r) => r,
            Err(e) => return format!("reading the outbox: {e}"),
        };
        let (len, _, initialized, overflowed) = match reader.outbox_state() {
            Ok(s) => s,
            Err(e) => return format!("reading the outbox: {e}"),
        };
        status.outbox.note_len(len, max);
        status
            .outbox
            .overflowed
            .store(overflowed, Ordering::Relaxed);
        if first {
            first = false;
            mark_ok(status, backoff);
            tracing::info!(outbox = len, "MongoDB mirror connected");
        }
        if !initialized || overflowed {
            drop(reader);
            if let Err(e) = full_sync(app, mirror, site_id, status).await {
                return e;
            }
            continue;
        }
        let entries = match reader.outbox_entries(0, BATCH) {
            Ok(e) => e,
            Err(e) => return format!("reading the outbox: {e}"),
        };
        drop(reader);
        let Some(&(upto, _)) = entries.last() else {
            if last_ping.elapsed() >= IDLE_PING {
                last_ping = Instant::now();
                if let Err(e) = mirror.db.run_command(doc! {"ping": 1}).await {
                    return mongo_error(&e);
                }
            }
            tokio::time::sleep(IDLE_POLL).await;
            continue;
        };
        let written = match push(mirror, entries.into_iter().map(|(_, e)| e).collect()).await {
            Ok(n) => n,
            Err(e) => return e,
        };
        ack(app, move |b| {
            b.outbox_ack(upto).map(|_| ()).map_err(ApiError::from)
        })
        .await;
        status
            .documents_mirrored
            .fetch_add(written as u64, Ordering::Relaxed);
        mark_ok(status, backoff);
        last_ping = Instant::now();
    }
}

fn mark_ok(status: &MirrorStatus, backoff: &mut Duration) {
    status.connected.store(true, Ordering::Relaxed);
    status.set_reason(None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    status.last_sync_at_us.store(now, Ordering::Relaxed);
    *backoff = FIRST_BACKOFF;
}

/// Runs a bookkeeping job through the writer, retrying while the writer is busy.
async fn ack<F>(app: &AppState, f: F)
where
    F: Fn(&mut crate::store::Batch<'_>) -> crate::error::ApiResult<()>
        + Send
        + Sync
        + Clone
        + 'static,
{
    loop {
        let job = f.clone();
        match app.writer.write(move |b| job(b)).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e.detail, "MongoDB mirror: outbox bookkeeping failed, retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Copies every collection from one snapshot, then drops the outbox entries the snapshot
/// covers. Entries appended after the reset are followed afterwards; documents are
/// idempotent upserts, so overlap is harmless. A crash in between starts it again.
async fn full_sync(
    app: &AppState,
    mirror: &Mirror,
    site_id: &str,
    status: &MirrorStatus,
) -> Result<(), String> {
    let started = Instant::now();
    // Only with MongoDB answering: the reset below throws the outbox away.
    mirror
        .db
        .run_command(doc! {"ping": 1})
        .await
        .map_err(|e| mongo_error(&e))?;
    status.initial_sync_done.store(false, Ordering::Relaxed);
    tracing::info!("MongoDB mirror: full copy of the appliance's state starts");
    ack(app, |b| {
        b.outbox_reset_for_full_sync().map_err(ApiError::from)
    })
    .await;
    let reader = app
        .store
        .reader()
        .map_err(|e| format!("reading the database: {e}"))?;
    let (_, covered, _, _) = reader
        .outbox_state()
        .map_err(|e| format!("reading the outbox: {e}"))?;
    let mut total = 0usize;
    for collection in COLLECTIONS {
        let mut cursor = Cursor::Start;
        while cursor != Cursor::Done {
            let (docs, next) = reader
                .mirror_page(collection, &cursor, site_id, BATCH)
                .map_err(|e| format!("reading the database: {e}"))?;
            cursor = next;
            if docs.is_empty() {
                continue;
            }
            let mut updates = Vec::with_capacity(docs.len());
            for (id, doc) in docs {
                updates.push(upsert_statement(&id, &doc)?);
            }
            let k = updates.len();
            total += k;
            command(mirror, collection, "update", "updates", updates).await?;
            status
                .documents_mirrored
                .fetch_add(k as u64, Ordering::Relaxed);
        }
    }
    drop(reader);
    ack(app, move |b| {
        b.outbox_ack(covered)?;
        b.mirror_mark_initialized().map_err(ApiError::from)
    })
    .await;
    status.initial_sync_done.store(true, Ordering::Relaxed);
    status.outbox.overflowed.store(false, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(
        documents = total,
        seconds = secs,
        "MongoDB mirror: full copy done; following the outbox"
    );
    Ok(())
}

fn upsert_statement(id: &str, doc: &serde_json::Value) -> Result<Document, String> {
    let d = mongodb::bson::to_document(doc)
        .map_err(|e| format!("document {id} does not convert to BSON: {e}"))?;
    Ok(doc! {"q": {"_id": id}, "u": d, "upsert": true})
}

/// Writes the latest version of every document in `entries` (in order per document).
async fn push(mirror: &Mirror, entries: Vec<OutboxEntry>) -> Result<usize, String> {
    let mut latest: HashMap<(&str, &str), usize> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        latest.insert((e.collection.as_str(), e.doc_id.as_str()), i);
    }
    let mut per: BTreeMap<&str, (Vec<Document>, Vec<Document>)> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        if latest[&(e.collection.as_str(), e.doc_id.as_str())] != i {
            continue; // a later entry of the same document supersedes it
        }
        let slot = per.entry(e.collection.as_str()).or_default();
        match e.op {
            Op::Upsert => {
                // A document that can never be written must not stop the mirror: it is
                // logged and skipped (the next change of that record sends it again).
                let statement = serde_json::from_str(&e.document)
                    .map_err(|err| format!("outbox entry {} is not JSON: {err}", e.doc_id))
                    .and_then(|v| upsert_statement(&e.doc_id, &v));
                match statement {
                    Ok(st) => slot.0.push(st),
                    Err(why) => tracing::error!(error = %why, "MongoDB mirror: document skipped"),
                }
            }
            Op::Delete => slot.1.push(doc! {"q": {"_id": &e.doc_id}, "limit": 1}),
            // The reader turns references into their documents; none reaches here.
            Op::EpochChunk => {
                tracing::error!(entry = %e.doc_id, "MongoDB mirror: an unexpanded chunk reference; skipped")
            }
        }
    }
    let mut n = 0;
    for (collection, (updates, deletes)) in per {
        n += updates.len() + deletes.len();
        if !updates.is_empty() {
            command(mirror, collection, "update", "updates", updates).await?;
        }
        if !deletes.is_empty() {
            command(mirror, collection, "delete", "deletes", deletes).await?;
        }
    }
    Ok(n)
}

/// One ordered bulk `update`/`delete` command; fails on any write or write-concern error.
async fn command(
    mirror: &Mirror,
    collection: &str,
    verb: &str,
    list: &str,
    statements: Vec<Document>,
) -> Result<(), String> {
    let mut cmd = Document::new();
    cmd.insert(verb, collection);
    cmd.insert(
        list,
        Bson::Array(statements.into_iter().map(Bson::Document).collect()),
    );
    cmd.insert("ordered", true);
    if let Some(wc) = &mirror.write_concern {
        cmd.insert("writeConcern", wc.clone());
    }
    let reply = mirror
        .db
        .run_command(cmd)
        .await
        .map_err(|e| mongo_error(&e))?;
    if let Ok(errors) = reply.get_array("writeErrors") {
        if let Some(first) = errors.first() {
            return Err(format!("MongoDB refused a write to {collection}: {first}"));
        }
    }
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(format!(
            "MongoDB write concern error on {collection}: {wce}"
        ));
    }
    Ok(())
}
