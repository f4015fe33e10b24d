//! The SCIM setup page: the tenant's base URL and token, step-by-step
//! instructions for Microsoft Entra ID and Okta, the last request the
//! identity provider made and the recent SCIM errors. Its script reads and
//! changes everything through `/api/v1/tenants/{t}/scim-setup` and
//! `…/scim-token` like any other client; the page never holds a secret
//! except the new token its own rotation just received.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::{Frame, SignedIn, frame, render};
use crate::admin::scim_setup::setup;
use crate::state::AppState;

#[derive(Template)]
#[template(path = "scim_setup.html")]
struct ScimSetupPage {
    frame: Frame,
}

/// `GET /t/{tenant}/scim-setup`.
pub(super) async fn scim_setup_page(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(tenant): Path<String>,
) -> Result<Response, Response> {
    let tenant = signed_in.tenant(&state, &tenant).await?;
    let data = setup(&state, &tenant)
        .await
        .and_then(|setup| {
            serde_json::to_value(setup).map_err(|error| {
                tracing::error!(%error, "the SCIM setup data did not serialise");
                crate::error::ApiError::internal()
            })
        })
        .map_err(IntoResponse::into_response)?;
    let frame = frame(
        &signed_in,
        &tenant,
        "scim-setup",
        "SCIM setup",
        data,
        "scim_setup.js",
    );
    Ok(render(&ScimSetupPage { frame }))
}
