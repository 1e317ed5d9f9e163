//! `GET/PUT/DELETE /api/v1/alerts`: one alert webhook per operator (their nodes), and one
//! fleet-wide hook for admins (every node). Operators manage only their own settings; an
//! admin names an operator with `?operator_id=`, or leaves it out for the fleet hook.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::extract::{ApiJson, ApiQuery};
use crate::app::AppState;
use crate::domain::alert::{
    validate_settings, AlertSettings, EventType, SettingsRequest, Subscriber,
    DEFAULT_OFFLINE_AFTER_SECONDS,
};
use crate::domain::ids::is_valid_subject;
use crate::domain::netguard::redact_url;
use crate::domain::role::Role;
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};

#[derive(Deserialize, utoipa::IntoParams)]
// Query-string parameters, optional (utoipa would document them as path parameters).
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    /// Admin only: whose settings (none: the fleet-wide hook).
    pub operator_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertSettingsRequest {
    /// `https://...` or `http://...`. A host that is, or resolves to, a loopback,
    /// link-local, private, CGNAT, unspecified, multicast or broadcast address (or does not
    /// resolve) is refused with 422 `webhook-address-refused`, unless
    /// `WEBHOOK_ALLOWED_NETWORKS` holds it.
    pub webhook_url: String,
    /// HMAC-SHA256 key of `X-Lucid-Signature`; required the first time, kept when left out.
    pub secret: Option<String>,
    /// Silence before `node.offline` is sent; 1 or more, default 300.
    pub offline_after_seconds: Option<u64>,
    /// Default: all five events.
    pub events: Option<Vec<String>>,
}

/// Settings as shown: never the secret.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AlertSettingsView {
    /// `operator` (with `operator_id`) or `fleet`.
    pub scope: String,
    pub operator_id: Option<String>,
    /// False when no webhook is set (the other fields then show the defaults).
    pub configured: bool,
    pub webhook_url: Option<String>,
    pub secret_set: bool,
    pub offline_after_seconds: u64,
    pub events: Vec<String>,
    pub updated_at: Option<String>,
}

impl AlertSettingsView {
    fn new(subscriber: &Subscriber, settings: Option<&AlertSettings>) -> Self {
        let (scope, operator_id) = match subscriber {
            Subscriber::Operator(id) => ("operator", Some(id.clone())),
            Subscriber::Fleet => ("fleet", None),
        };
        Self {
            scope: scope.to_string(),
            operator_id,
            configured: settings.is_some(),
            webhook_url: settings.map(|s| s.webhook_url.clone()),
            secret_set: settings.is_some(),
            offline_after_seconds: settings
                .map_or(DEFAULT_OFFLINE_AFTER_SECONDS, |s| s.offline_after_seconds),
            events: settings
                .map_or(EventType::ALL.to_vec(), |s| s.events.clone())
                .into_iter()
                .map(|e| e.as_str().to_string())
                .collect(),
            updated_at: settings.map(|s| rfc3339_us(s.updated_at_us)),
        }
    }
}

/// Whose settings the caller is asking about, or why they may not.
fn subscriber_for(caller: &Caller, query: &AlertsQuery) -> ApiResult<Subscriber> {
    match (caller.role, query.operator_id.as_deref()) {
        (Role::Admin, None) => Ok(Subscriber::Fleet),
        (Role::Admin, Some(id)) if is_valid_subject(id) => Ok(Subscriber::Operator(id.into())),
        (Role::Admin, Some(_)) => Err(ApiError::validation(
            "operator_id must be 1-128 characters of letters, digits and _-.@:",
        )),
        (Role::Operator, None) => Ok(Subscriber::Operator(caller.subject.clone())),
        (Role::Operator, Some(id)) if id == caller.subject => {
            Ok(Subscriber::Operator(id.to_string()))
        }
        (Role::Operator, Some(_)) => Err(ApiError::forbidden(
            "operators manage only their own alert settings",
        )),
        _ => Err(ApiError::forbidden(
            "alerts are set by operators and admins",
        )),
    }
}

/// The caller's alert settings (admin: `?operator_id=` or the fleet hook).
#[utoipa::path(get, operation_id = "alerts_get", path = "/api/v1/alerts", tag = "alerts",
    params(AlertsQuery),
    responses((status = 200, body = AlertSettingsView), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get_settings(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AlertsQuery>,
) -> ApiResult<Json<AlertSettingsView>> {
    let subscriber = subscriber_for(&caller, &query)?;
    let settings = app.store.reader()?.alert_settings(&subscriber.key())?;
    Ok(Json(AlertSettingsView::new(&subscriber, settings.as_ref())))
}

/// Sets the webhook (the secret is never shown again).
#[utoipa::path(put, operation_id = "alerts_put", path = "/api/v1/alerts", tag = "alerts",
    params(AlertsQuery), request_body = AlertSettingsRequest,
    responses((status = 200, body = AlertSettingsView), (status = 400, body = crate::error::Problem),
        (status = 403, body = crate::error::Problem),
        (status = 422, description = "`webhook-address-refused`: the host is, or resolves to, an address webhooks may not reach (see `WEBHOOK_ALLOWED_NETWORKS`), or does not resolve", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn put_settings(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AlertsQuery>,
    ApiJson(req): ApiJson<AlertSettingsRequest>,
) -> ApiResult<Json<AlertSettingsView>> {
    let subscriber = subscriber_for(&caller, &query)?;
    let request = SettingsRequest {
        webhook_url: req.webhook_url,
        secret: req.secret,
        offline_after_seconds: req.offline_after_seconds,
        events: req.events,
    };
    let key = subscriber.key();
    // A malformed request is a 400 whatever its host; then where the hook leads is checked
    // (resolved, nothing sent) before it is stored, and again at every delivery.
    let current = app.store.reader()?.alert_settings(&key)?;
    validate_settings(request.clone(), current.as_ref(), 0).map_err(ApiError::validation)?;
    crate::app::alerts::check_webhook_url(&app, &request.webhook_url).await?;
    let actor = caller.actor();
    let saved = app
        .writer
        .write(move |b| {
            // Validated against what is stored at this moment (a PUT may keep the secret).
            let current = b.alert_settings(&key)?;
            let settings = validate_settings(request, current.as_ref(), b.now_us())
                .map_err(ApiError::validation)?;
            b.put_alert_settings(&key, &settings)?;
            b.audit(
                &actor,
                "alerts.set",
                &key,
                json!({
                    // Scheme and host only: a hook's path or query is often its secret.
                    "webhook_url": redact_url(&settings.webhook_url),
                    "offline_after_seconds": settings.offline_after_seconds,
                    "events": settings.events.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                }),
            )?;
            Ok(settings)
        })
        .await?;
    Ok(Json(AlertSettingsView::new(&subscriber, Some(&saved))))
}

/// Removes the webhook and whatever was still queued for it.
#[utoipa::path(delete, operation_id = "alerts_delete", path = "/api/v1/alerts", tag = "alerts",
    params(AlertsQuery),
    responses((status = 204), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn delete_settings(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AlertsQuery>,
) -> ApiResult<Response> {
    let key = subscriber_for(&caller, &query)?.key();
    let actor = caller.actor();
    app.writer
        .write(move |b| {
            if b.delete_alert_settings(&key)? {
                b.audit(&actor, "alerts.delete", &key, json!({}))?;
            }
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
