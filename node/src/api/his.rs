//! HisService: the hospital information system's bills.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};
use yinyi_actors::Backend;
use yinyi_api::error::status_with_reason;
use yinyi_api::v1::his_service_client::HisServiceClient;
use yinyi_api::v1::his_service_server::HisService;
use yinyi_api::v1::*;
use yinyi_ledger::{CommandBody, Effect};

use super::convert;
use super::{Gateway, unexpected};
use crate::lead_or_forward;

pub struct His {
    pub gateway: Arc<Gateway>,
}

impl His {
    fn bill(&self, id: &yinyi_ledger::BillId) -> Result<Bill, Status> {
        self.gateway
            .backend()
            .bill(id)
            .map(|b| convert::bill(&b))
            .ok_or_else(|| {
                status_with_reason(Code::NotFound, "BILL_NOT_FOUND", format!("no bill {id}"))
            })
    }
}

#[tonic::async_trait]
impl HisService for His {
    async fn post_bill(&self, request: Request<PostBillRequest>) -> Result<Response<Bill>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, post_bill);
        let r = request.into_inner();
        let g = &self.gateway;
        let card = convert::card_no("card_no", &r.card_no)?;
        let bill = convert::bill_id(&r.bill_id)?;
        let body = CommandBody::PostBill {
            bill: bill.clone(),
            card: card.clone(),
            kind: convert::bill_kind(r.kind)?,
            amount: convert::amount("amount", &r.amount, g.limit())?,
        };
        let command = g.command(&r.request_id, &r.terminal_id, "", body)?;
        let key = g.key_for_card(&card, &command.terminal);
        match g.submit(key, command).await? {
            Effect::BillPosted { bill, .. } => Ok(Response::new(self.bill(&bill)?)),
            other => Err(unexpected(&other)),
        }
    }

    async fn cancel_bill(
        &self,
        request: Request<CancelBillRequest>,
    ) -> Result<Response<CancelBillReply>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, cancel_bill);
        let r = request.into_inner();
        let g = &self.gateway;
        let bill = convert::bill_id(&r.bill_id)?;
        let body = match convert::optional_amount("amount", &r.amount, g.limit())? {
            None => CommandBody::CancelBill { bill: bill.clone() },
            Some(amount) => CommandBody::CancelBillPart {
                bill: bill.clone(),
                amount,
            },
        };
        let command = g.command(&r.request_id, &r.terminal_id, "", body)?;
        let key = g.key_for_bill(&bill, &command.terminal);
        match g.submit(key, command).await? {
            Effect::BillCancelled { bill, refundable } => Ok(Response::new(CancelBillReply {
                bill_id: bill.to_string(),
                refundable,
            })),
            other => Err(unexpected(&other)),
        }
    }

    async fn mark_invoiced(
        &self,
        request: Request<MarkInvoicedRequest>,
    ) -> Result<Response<Bill>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, mark_invoiced);
        let r = request.into_inner();
        let g = &self.gateway;
        let bill = convert::bill_id(&r.bill_id)?;
        let command = g.command(
            &r.request_id,
            &r.terminal_id,
            "",
            CommandBody::MarkInvoiced { bill: bill.clone() },
        )?;
        let key = g.key_for_bill(&bill, &command.terminal);
        match g.submit(key, command).await? {
            Effect::BillInvoiced { bill } => Ok(Response::new(self.bill(&bill)?)),
            other => Err(unexpected(&other)),
        }
    }

    async fn bill_feed(
        &self,
        request: Request<BillFeedRequest>,
    ) -> Result<Response<BillFeedReply>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, bill_feed);
        let r = request.into_inner();
        let limit = match r.limit {
            0 => 100,
            n @ 1..=1000 => n as usize,
            n => {
                return Err(convert::invalid(
                    convert::reason::INVALID_REQUEST,
                    format!("limit {n}: at most 1000 events a page"),
                ));
            }
        };
        let after = match r.after_cursor.as_str() {
            "" => None,
            text => Some(convert::txn_id("after_cursor", text)?),
        };
        self.gateway.read_barrier().await?;
        let events = self
            .gateway
            .backend()
            .store()
            .bill_feed(after, limit)
            .map_err(|e| convert::internal(format!("the bill feed is unreadable: {e}")))?;
        let next_cursor = events.last().map_or(r.after_cursor, |e| e.txn.to_string());
        Ok(Response::new(BillFeedReply {
            events: events.iter().map(convert::bill_event).collect(),
            next_cursor,
        }))
    }

    async fn get_bill(&self, request: Request<GetBillRequest>) -> Result<Response<Bill>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, get_bill);
        let id = convert::bill_id(&request.into_inner().bill_id)?;
        self.gateway.read_barrier().await?;
        Ok(Response::new(self.bill(&id)?))
    }
}
