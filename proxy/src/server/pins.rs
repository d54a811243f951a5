//! MCP tool pins over gRPC: `ObserveTools` from proxies that read a
//! server's listing, and `ListToolPins` and `AcceptToolPin` for operators
//! (admin token).

use tonic::{Request, Status};

use crate::catalog::McpPinning;
use crate::decision::pins::{ObservedTool, PinError, ToolChange};
use crate::decision::proto::pb;

use super::{tasks, DecisionPlane};

/// The most tools one listing may report: more than any server lists, so
/// the store is never asked to record an unbounded message.
const MAX_OBSERVED: usize = 4096;

fn status(err: PinError) -> Status {
    match err {
        PinError::NotFound(..) => Status::not_found(err.to_string()),
        PinError::Conflict { .. } => Status::failed_precondition(err.to_string()),
        PinError::Unavailable(_) => Status::unavailable(err.to_string()),
    }
}

/// A fingerprint as tollgate writes one: hex SHA-256.
fn is_fingerprint(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

pub async fn observe(
    plane: &DecisionPlane,
    request: Request<pb::ObserveToolsRequest>,
) -> Result<pb::ObserveToolsResponse, Status> {
    let request = request.into_inner();
    if request.tools.len() > MAX_OBSERVED {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_OBSERVED} tools per listing"
        )));
    }
    let pinning = plane.snapshot.load().catalog.mcp_pinning(&request.server);
    if pinning == McpPinning::Off {
        return Err(Status::failed_precondition(format!(
            "`{}` declares no MCP server whose tools are pinned",
            request.server
        )));
    }
    let mut tools = Vec::with_capacity(request.tools.len());
    for tool in request.tools {
        if tool.name.is_empty() || tool.name.len() > 128 || !is_fingerprint(&tool.fingerprint) {
            return Err(Status::invalid_argument(
                "each tool needs a name (at most 128 bytes) and a hex SHA-256 fingerprint",
            ));
        }
        tools.push(ObservedTool {
            name: tool.name,
            fingerprint: tool.fingerprint.to_ascii_lowercase(),
        });
    }
    let changes = plane
        .core
        .decider()
        .observe_tools(&request.server, pinning, &tools)
        .await
        .map_err(Status::unavailable)?;
    Ok(pb::ObserveToolsResponse {
        changed: changes
            .iter()
            .map(|c| pb::ToolPin {
                server: request.server.clone(),
                name: c.name.clone(),
                pinned: c.pinned.clone(),
                seen: c.seen.clone(),
                changed: true,
                ..Default::default()
            })
            .collect(),
    })
}

pub async fn list(
    plane: &DecisionPlane,
    request: Request<pb::ListToolPinsRequest>,
) -> Result<pb::ListToolPinsResponse, Status> {
    tasks::require_admin(plane, &request)?;
    let pins = plane.tasks.pins().list().await.map_err(status)?;
    Ok(pb::ListToolPinsResponse {
        pins: pins.iter().map(pb::ToolPin::from).collect(),
    })
}

pub async fn accept(
    plane: &DecisionPlane,
    request: Request<pb::AcceptToolPinRequest>,
) -> Result<pb::ToolPin, Status> {
    tasks::require_admin(plane, &request)?;
    let request = request.into_inner();
    let expected = (!request.fingerprint.is_empty()).then_some(request.fingerprint.as_str());
    let before = plane
        .tasks
        .pins()
        .get(&request.server, &request.name)
        .await
        .map_err(status)?;
    let pin = plane
        .tasks
        .pins()
        .accept(&request.server, &request.name, expected)
        .await
        .map_err(status)?;
    if let Some(before) = before.filter(|b| b.pinned != pin.pinned) {
        tracing::info!(
            tool = %pin.server,
            mcp_tool = %pin.name,
            pinned = %pin.pinned,
            "MCP tool definition accepted"
        );
        let accepted = ToolChange {
            name: pin.name.clone(),
            pinned: before.pinned,
            seen: pin.pinned.clone(),
        };
        let pinning = plane.snapshot.load().catalog.mcp_pinning(&pin.server);
        plane
            .audit
            .emit_tool_pin("mcp_tool_accepted", &pin.server, &accepted, pinning);
    }
    Ok(pb::ToolPin::from(&pin))
}
