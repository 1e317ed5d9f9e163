//! Payouts: a node's balance and payouts, runs, export for the treasury, confirmation and
//! failure; and the ledger behind a balance (with admin adjustments).

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::created;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::nodes::visible_node;
use super::pagination::{ListPage, PageParams};
use crate::app::heavy::heavy_read;
use crate::app::payouts::process as run_payouts;
use crate::app::{App, AppState};
use crate::domain::ids::is_valid_id;
use crate::domain::money::format_usdt;
use crate::domain::node::{validate_text, Node};
use crate::domain::payout::{normalize_tx_hash, PayoutState};
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};
use crate::store::payouts;
use crate::views::{LedgerEntryView, PayoutView};

#[derive(Serialize, utoipa::ToSchema)]
pub struct NodePayouts {
    pub node_id: String,
    pub balance_usdt: String,
    pub threshold_usdt: String,
    /// Oldest first.
    pub payouts: Vec<PayoutView>,
}

/// A node's balance, the threshold, and its payouts (its operator, the node, admins).
#[utoipa::path(get, operation_id = "payouts_for_node", path = "/api/v1/payouts/{id}", tag = "payouts",
    params(("id" = String, Path, description = "node_id")),
    responses((status = 200, body = NodePayouts), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn for_node(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
) -> ApiResult<Json<NodePayouts>> {
    visible_node(&app, &caller, &node_id)?;
    // A node's whole payout history: a heavy read. The balance is read from the same
    // snapshot as the payouts, so a payout that failed and was re-credited in between
    // is never shown failed beside the balance from before.
    heavy_read(&app, move |app| {
        let reader = app.store.reader()?;
        let node = snapshot_node(&reader, &node_id)?;
        let list = reader.node_payouts(&node_id)?;
        Ok(Json(NodePayouts {
            node_id,
            balance_usdt: format_usdt(node.balance_usdt),
            threshold_usdt: format_usdt(app.config.payout_threshold_usdt),
            payouts: list.iter().map(PayoutView::from).collect(),
        }))
    })
    .await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RunResponse {
    pub created: Vec<PayoutView>,
    /// Nodes with a balance that were not paid (below the threshold, no valid address,
    /// suspended).
    pub skipped: u64,
}

/// Run payouts now (admin).
#[utoipa::path(post, operation_id = "payouts_process", path = "/api/v1/payouts/process", tag = "payouts",
    responses((status = 200, body = RunResponse), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn process(State(app): State<AppState>, caller: Caller) -> ApiResult<Json<RunResponse>> {
    caller.require_admin()?;
    let out = run_payouts(&app, &caller.actor()).await?;
    Ok(Json(RunResponse {
        created: out.created.iter().map(PayoutView::from).collect(),
        skipped: out.skipped,
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
// Query-string parameters, optional (utoipa would document them as path parameters).
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// pending, submitted, confirmed or failed; all when absent.
    pub state: Option<String>,
    /// json (default, paginated) or csv (everything).
    pub format: Option<String>,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Export payouts for the treasury (admin): JSON pages or one CSV file.
#[utoipa::path(get, operation_id = "payouts_export", path = "/api/v1/payouts", tag = "payouts",
    params(ExportQuery, PageParams),
    responses((status = 200, body = ListPage<PayoutView>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn export(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ExportQuery>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let states: Vec<PayoutState> = match q.state.as_deref() {
        None | Some("") => PayoutState::ALL.to_vec(),
        Some(s) => vec![PayoutState::parse(s).ok_or_else(|| {
            ApiError::validation("state must be pending, submitted, confirmed or failed")
        })?],
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::validation("format must be json or csv")),
    };
    let limit = page.limit()?;
    let cursor = page.after()?;
    heavy_read(&app, move |app| {
        export_read(app, states, csv, limit, cursor)
    })
    .await
}

/// The export's reads, on a blocking thread.
fn export_read(
    app: &App,
    states: Vec<PayoutState>,
    csv: bool,
    limit: usize,
    cursor: Option<String>,
) -> ApiResult<Response> {
    let reader = app.store.reader()?;
    if csv {
        let mut out = String::from(
            "payout_id,node_id,amount_usdt,payout_address,state,created_at,updated_at,tx_hash,attempts,error\n",
        );
        for state in states {
            let mut after: Option<String> = None;
            loop {
                let page = reader.payouts_in_state(state, after.as_deref(), 1000)?;
                for p in &page.items {
                    out.push_str(&format!(
                        "{},{},{},{},{},{},{},{},{},{}\n",
                        p.payout_id,
                        p.node_id,
                        format_usdt(p.amount),
                        csv_field(&p.payout_address),
                        p.state.as_str(),
                        rfc3339_us(p.created_at_us),
                        rfc3339_us(p.updated_at_us),
                        p.tx_hash.as_deref().unwrap_or(""),
                        p.attempts,
                        csv_field(p.error.as_deref().unwrap_or("")),
                    ));
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"payouts.csv\"",
                ),
            ],
            out,
        )
            .into_response());
    }
    // JSON: pages over the states in order; the cursor is "state:payout_id".
    let (mut start_state, mut after) = match cursor {
        None => (0, None),
        Some(c) => {
            let (s, id) = c
                .split_once(':')
                .ok_or_else(|| ApiError::validation("cursor is not one this service issued"))?;
            let idx = states
                .iter()
                .position(|st| st.as_str() == s)
                .ok_or_else(|| ApiError::validation("cursor is not one this service issued"))?;
            (idx, Some(id.to_string()))
        }
    };
    let mut items: Vec<PayoutView> = Vec::new();
    let mut next = None;
    while start_state < states.len() {
        let state = states[start_state];
        let page = reader.payouts_in_state(state, after.as_deref(), limit - items.len())?;
        items.extend(page.items.iter().map(PayoutView::from));
        if let Some(n) = page.next {
            next = Some(format!("{}:{n}", state.as_str()));
            break;
        }
        start_state += 1;
        after = None;
        if items.len() == limit {
            if start_state < states.len() {
                // Resume at the start of the next state.
                next = Some(format!("{}:", states[start_state].as_str()));
            }
            break;
        }
    }
    Ok(Json(ListPage::new(items, next)).into_response())
}

fn checked_payout_id(id: &str) -> ApiResult<()> {
    if is_valid_id("payout", id) {
        Ok(())
    } else {
        Err(ApiError::not_found("payout", id))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmRequest {
    /// The TRON transaction hash (64 hex digits).
    pub tx_hash: String,
}

/// Confirm a payout with its transaction hash (admin). A hash confirms one payout only.
#[utoipa::path(post, operation_id = "payouts_confirm", path = "/api/v1/payouts/{id}/confirm", tag = "payouts",
    params(("id" = String, Path, description = "payout_id")),
    request_body = ConfirmRequest,
    responses((status = 200, body = PayoutView), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn confirm(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(payout_id): ApiPath<String>,
    ApiJson(req): ApiJson<ConfirmRequest>,
) -> ApiResult<Json<PayoutView>> {
    caller.require_admin()?;
    checked_payout_id(&payout_id)?;
    let tx_hash = normalize_tx_hash(&req.tx_hash)
        .ok_or_else(|| ApiError::validation("tx_hash must be 64 hex digits"))?;
    let actor = caller.actor();
    let payout = app
        .writer
        .write(move |b| payouts::confirm(b, &payout_id, &tx_hash, &actor).map_err(ApiError::from))
        .await?;
    Ok(Json(PayoutView::from(&payout)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub reason: String,
    /// Needed to fail a payout the webhook sink has already sent (`submitted`): only when
    /// the payment service is known not to have paid it, or it would be paid twice.
    #[serde(default)]
    pub force: bool,
}

/// Fail a payout (admin): the amount goes back to the node's balance by a ledger entry.
#[utoipa::path(post, operation_id = "payouts_fail", path = "/api/v1/payouts/{id}/fail", tag = "payouts",
    params(("id" = String, Path, description = "payout_id")),
    request_body = FailRequest,
    responses((status = 200, body = PayoutView), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn fail(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(payout_id): ApiPath<String>,
    ApiJson(req): ApiJson<FailRequest>,
) -> ApiResult<Json<PayoutView>> {
    caller.require_admin()?;
    checked_payout_id(&payout_id)?;
    let reason = validate_text("reason", &req.reason).map_err(ApiError::validation)?;
    let actor = caller.actor();
    let force = req.force;
    let payout = app
        .writer
        .write(move |b| {
            if let Some(p) = b.payout(&payout_id)? {
                if p.state == PayoutState::Submitted && !force {
                    return Err(ApiError::conflict(
                        "payout-submitted",
                        "the payment service was already asked to pay this payout; fail it only with \"force\": true once you know it was not paid",
                    ));
                }
            }
            payouts::fail(b, &payout_id, &reason, &actor).map_err(ApiError::from)
        })
        .await?;
    Ok(Json(PayoutView::from(&payout)))
}

/// One page of a node's ledger, oldest entry first.
#[derive(Serialize, utoipa::ToSchema)]
pub struct NodeLedger {
    pub node_id: String,
    /// The node's balance now (the sum of all its entries, not only this page's).
    pub balance_usdt: String,
    pub items: Vec<LedgerEntryView>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// A node's ledger: the entries its balance is the sum of, oldest first, a page at a time.
#[utoipa::path(get, operation_id = "ledger_get", path = "/api/v1/nodes/{node_id}/ledger", tag = "payouts",
    params(("node_id" = String, Path), PageParams),
    responses((status = 200, body = NodeLedger), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn ledger(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<NodeLedger>> {
    let limit = page.limit()?;
    let after = match page.after()? {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::validation("cursor is not one this service issued"))?,
        ),
    };
    visible_node(&app, &caller, &node_id)?;
    heavy_read(&app, move |app| {
        // The balance from the page's own snapshot: the entries sum to it.
        let reader = app.store.reader()?;
        let node = snapshot_node(&reader, &node_id)?;
        let page = reader.ledger_page(&node_id, after, limit)?;
        let mut items: Vec<LedgerEntryView> =
            page.items.iter().map(LedgerEntryView::from).collect();
        let mut next = page.next;
        // The day's pending credits close the last page as the entry they will become
        // (after every stored one), so the entries of all pages sum to the balance.
        if next.is_none() {
            let next_seq = reader.ledger_seq()? + 1;
            if let Some(pending) = LedgerEntryView::pending(&node, next_seq, app.clock.now_us()) {
                if items.len() < limit {
                    items.push(pending);
                } else {
                    // A full page: the pending entry opens one more.
                    next = items.last().map(|e| e.seq.to_string());
                }
            }
        }
        let ListPage { items, next_cursor } = ListPage::new(items, next);
        Ok(Json(NodeLedger {
            node_id,
            balance_usdt: format_usdt(node.balance_usdt),
            items,
            next_cursor,
        }))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest {
    /// Signed decimal string with at most 6 places, e.g. "1.500000" or "-0.25".
    pub amount_usdt: String,
    pub reason: String,
}

/// Correct a balance by a ledger entry (admin). The balance cannot go below zero.
#[utoipa::path(post, operation_id = "ledger_adjust", path = "/api/v1/nodes/{node_id}/ledger", tag = "payouts",
    params(("node_id" = String, Path)),
    request_body = AdjustRequest,
    responses((status = 201, body = LedgerEntryView), (status = 422, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn adjust(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
    ApiJson(req): ApiJson<AdjustRequest>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    visible_node(&app, &caller, &node_id)?;
    let amount: Decimal = req
        .amount_usdt
        .trim()
        .parse()
        .map_err(|_| ApiError::validation("amount_usdt must be a decimal string"))?;
    if amount.is_zero()
        || amount.normalize().scale() > 6
        || amount.abs() > Decimal::from(1_000_000_000u64)
    {
        return Err(ApiError::validation(
            "amount_usdt must be non-zero, with at most 6 decimal places",
        ));
    }
    let reason = validate_text("reason", &req.reason).map_err(ApiError::validation)?;
    let actor = caller.actor();
    let entry = app
        .writer
        .write(move |b| {
            payouts::adjust(b, &node_id, amount, &reason, &actor).map_err(ApiError::from)
        })
        .await?;
    Ok(created(LedgerEntryView::from(&entry)))
}

/// The node as `reader`'s snapshot holds it (the caller was checked on an earlier one;
/// node records are never removed, so it is there).
fn snapshot_node(reader: &crate::store::queries::Reader, node_id: &str) -> ApiResult<Node> {
    reader
        .node(node_id)?
        .ok_or_else(|| ApiError::not_found("node", node_id))
}
