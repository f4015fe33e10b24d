//! The grants page (`/t/{tenant}/grants`): time-bound grants (list, create
//! with a user picker, revoke) and the scheduled entitlement changes
//! (pending ones with cancel, and recent outcomes). Its first view inlines
//! the JSON of `GET /grants` and `GET /scheduled-changes`; every change is a
//! call of `/api/v1`.

use askama::Template;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::get;
use entitle_core::SERVICES;
use serde_json::json;
use time::OffsetDateTime;

use super::{Frame, SignedIn, error_page, frame, render, service_json};
use crate::admin::grants::GrantJson;
use crate::admin::scheduled_changes::ScheduledChangeJson;
use crate::error::ApiError;
use crate::state::AppState;

/// The grants page's route.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/t/{tenant}/grants", get(grants_page))
}

#[derive(Template)]
#[template(path = "grants.html")]
struct GrantsPage {
    frame: Frame,
}

async fn grants_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let load = async {
        let now = OffsetDateTime::now_utc();
        let grants: Vec<GrantJson> = state
            .store
            .grants(&tenant.id)
            .await?
            .iter()
            .map(|g| GrantJson::new(g, now))
            .collect();
        let changes: Vec<ScheduledChangeJson> = state
            .store
            .scheduled_changes(&tenant.id, None)
            .await?
            .iter()
            .map(ScheduledChangeJson::from)
            .collect();
        let services: Vec<_> = SERVICES.iter().map(service_json).collect();
        Ok::<_, ApiError>(json!({"grants": grants, "changes": changes, "services": services}))
    };
    let data = load.await.map_err(|e| error_page(&e))?;
    let frame = frame(
        &signed_in,
        &tenant,
        "grants",
        "Grants and scheduled changes",
        data,
        "grants.js",
    );
    Ok(render(&GrantsPage { frame }))
}
