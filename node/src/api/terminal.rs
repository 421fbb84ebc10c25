//! TerminalService: registration, liveness, shifts and cash collection.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};
use yinyi_actors::{Backend, EntityKey};
use yinyi_api::error::status_with_reason;
use yinyi_api::v1::terminal_service_client::TerminalServiceClient;
use yinyi_api::v1::terminal_service_server::TerminalService;
use yinyi_api::v1::*;
use yinyi_ledger::{CommandBody, Effect};

use super::{Gateway, unexpected};
use super::{auth, convert};
use crate::lead_or_forward;

pub struct Terminals {
    pub gateway: Arc<Gateway>,
}

fn terminal_reply(t: &yinyi_ledger::Terminal) -> TerminalReply {
    TerminalReply {
        terminal_id: t.id.to_string(),
        status: convert::screaming(&t.status),
        cash_box: convert::money(t.cash_box),
        open_shift: t.shift.as_ref().map_or(0, |s| s.seq),
    }
}

#[tonic::async_trait]
impl TerminalService for Terminals {
    async fn register_terminal(
        &self,
        request: Request<RegisterTerminalRequest>,
    ) -> Result<Response<TerminalReply>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            TerminalServiceClient,
            register_terminal
        );
        let r = request.into_inner();
        let g = &self.gateway;
        let new = convert::terminal_id("new_terminal_id", &r.new_terminal_id)?;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::RegisterTerminal {
                terminal: new.clone(),
            },
        )?;
        match g.submit(EntityKey::Terminal(new.clone()), command).await? {
            Effect::TerminalChanged { terminal, .. } => {
                let t = g.backend().terminal(&terminal).ok_or_else(|| {
                    convert::internal(format!("terminal {terminal} registered but not found"))
                })?;
                Ok(Response::new(terminal_reply(&t)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<TerminalReply>, Status> {
        lead_or_forward!(self.gateway, request, TerminalServiceClient, heartbeat);
        let id = convert::terminal_id("terminal_id", &request.into_inner().terminal_id)?;
        // A terminal reports only for itself.
        auth::check_terminal(&id)?;
        self.gateway.read_barrier().await?;
        let t = self.gateway.backend().terminal(&id).ok_or_else(|| {
            status_with_reason(
                Code::NotFound,
                "TERMINAL_NOT_REGISTERED",
                format!("terminal {id} is not registered"),
            )
        })?;
        metrics::counter!("api_heartbeats_total").increment(1);
        Ok(Response::new(terminal_reply(&t)))
    }

    async fn open_shift(
        &self,
        request: Request<ShiftRequest>,
    ) -> Result<Response<OpenShiftReply>, Status> {
        lead_or_forward!(self.gateway, request, TerminalServiceClient, open_shift);
        let r = request.into_inner();
        let g = &self.gateway;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::OpenShift,
        )?;
        match g
            .submit(EntityKey::Terminal(command.terminal.clone()), command)
            .await?
        {
            Effect::ShiftOpened { terminal, seq } => Ok(Response::new(OpenShiftReply {
                terminal_id: terminal.to_string(),
                seq,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn close_shift(
        &self,
        request: Request<ShiftRequest>,
    ) -> Result<Response<ShiftReport>, Status> {
        lead_or_forward!(self.gateway, request, TerminalServiceClient, close_shift);
        let r = request.into_inner();
        let g = &self.gateway;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::CloseShift,
        )?;
        match g
            .submit(EntityKey::Terminal(command.terminal.clone()), command)
            .await?
        {
            Effect::ShiftClosed(report) => Ok(Response::new(convert::shift_report(&report))),
            other => Err(unexpected(&other)),
        }
    }

    async fn collect_cash(
        &self,
        request: Request<CollectCashRequest>,
    ) -> Result<Response<CollectionReport>, Status> {
        lead_or_forward!(self.gateway, request, TerminalServiceClient, collect_cash);
        let r = request.into_inner();
        let g = &self.gateway;
        let counted = convert::non_negative("counted", &r.counted)?;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            &r.operator_id,
            CommandBody::CollectCash { counted },
        )?;
        match g
            .submit(EntityKey::Terminal(command.terminal.clone()), command)
            .await?
        {
            Effect::CashCollected(report) => Ok(Response::new(convert::collection_report(&report))),
            other => Err(unexpected(&other)),
        }
    }
}
