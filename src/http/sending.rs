//! `GET /sending`, `POST /sending/pause`, `POST /sending/resume`: the switch that holds every
//! daemon's send lanes, as the console's and the CLI's `pause` / `resume`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;

use super::{ApiError, HttpState};
use crate::service::console::set_paused;
use crate::store::PauseState;

pub(super) async fn get_sending(
    State(state): State<Arc<HttpState>>,
) -> Result<Json<PauseState>, ApiError> {
    Ok(Json(state.deliverer.store.pause_state().await?))
}

async fn set(state: &HttpState, paused: bool) -> Result<Json<PauseState>, ApiError> {
    let d = &state.deliverer;
    set_paused(&d.store, paused, "api (bearer token)", d.clock.now()).await?;
    Ok(Json(d.store.pause_state().await?))
}

pub(super) async fn pause(
    State(state): State<Arc<HttpState>>,
) -> Result<Json<PauseState>, ApiError> {
    set(&state, true).await
}

pub(super) async fn resume(
    State(state): State<Arc<HttpState>>,
) -> Result<Json<PauseState>, ApiError> {
    set(&state, false).await
}
