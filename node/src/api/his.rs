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
    /// For the refund that follows a confirmed double collection.
    pub payments: Arc<super::payment::Payments>,
}

/// The most charges one HIS reconciliation carries (a day of the biggest hospital).
const MAX_HIS_CHARGES: usize = 100_000;

impl His {
    /// A bill as the API shows it, with its insurance split when it is insured.
    fn bill(&self, id: &yinyi_ledger::BillId) -> Result<Bill, Status> {
        let mut bill = self
            .gateway
            .backend()
            .bill(id)
            .map(|b| convert::bill(&b))
            .ok_or_else(|| {
                status_with_reason(Code::NotFound, "BILL_NOT_FOUND", format!("no bill {id}"))
            })?;
        if let Some(insured) = self.insured_bill(id)? {
            bill.insurance_reversed = insured.reversed_at.is_some();
            bill.insurance = Some(convert::insurance_split(&insured.split));
        }
        Ok(bill)
    }

    fn insured_bill(
        &self,
        id: &yinyi_ledger::BillId,
    ) -> Result<Option<yinyi_ledger::InsuredBill>, Status> {
        self.gateway
            .backend()
            .store()
            .insured_bill(id)
            .map_err(|e| convert::internal(format!("the insurance split is unreadable: {e}")))
    }
}

/// The most lines of each list one page of the daily insurance list carries (about 600 KiB).
const MAX_INSURANCE_LINES: usize = 5_000;

#[tonic::async_trait]
impl HisService for His {
    async fn post_bill(&self, request: Request<PostBillRequest>) -> Result<Response<Bill>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, post_bill);
        let r = request.into_inner();
        let g = &self.gateway;
        let card = convert::card_no("card_no", &r.card_no)?;
        let bill = convert::bill_id(&r.bill_id)?;
        let kind = convert::bill_kind(r.kind)?;
        let body = match &r.insurance {
            None => CommandBody::PostBill {
                bill: bill.clone(),
                card: card.clone(),
                kind,
                amount: convert::amount("amount", &r.amount, g.limit())?,
            },
            Some(split) => {
                let split = convert::to_insurance_split(split, g.limit())?;
                if !r.amount.is_empty()
                    && convert::amount("amount", &r.amount, g.limit())? != split.self_pay
                {
                    return Err(convert::invalid(
                        crate::api::reason::INVALID_AMOUNT,
                        format!(
                            "amount {} is not the insurance split's self-pay part {}: leave it \
                             empty, or give the self-pay part",
                            r.amount, split.self_pay
                        ),
                    ));
                }
                CommandBody::PostInsuredBill {
                    bill: bill.clone(),
                    card: card.clone(),
                    kind,
                    split,
                }
            }
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

    async fn reconcile_his(
        &self,
        request: Request<ReconcileHisRequest>,
    ) -> Result<Response<HisReconciliationReport>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, reconcile_his);
        let r = request.into_inner();
        let g = &self.gateway;
        // HIS acts through its own terminal, as for every call.
        super::auth::check_terminal(&convert::terminal_id("terminal_id", &r.terminal_id)?)?;
        if r.charges.len() > MAX_HIS_CHARGES {
            return Err(convert::invalid(
                convert::reason::INVALID_REQUEST,
                format!(
                    "at most {MAX_HIS_CHARGES} charges a day, not {}",
                    r.charges.len()
                ),
            ));
        }
        let mut lines = Vec::with_capacity(r.charges.len());
        for (i, charge) in r.charges.iter().enumerate() {
            let at = |e: Status| {
                convert::invalid(
                    convert::reason::INVALID_REQUEST,
                    format!("charge {i}: {}", e.message()),
                )
            };
            lines.push(yinyi_actors::recon::HisLine {
                bill: convert::bill_id(&charge.bill_id).map_err(at)?,
                amount: convert::amount("amount", &charge.amount, g.limit()).map_err(at)?,
            });
        }
        let report = crate::recon::reconcile_his(g, &r.date, &lines).await?;
        Ok(Response::new(convert::his_report(&report)))
    }

    async fn confirm_double_collection(
        &self,
        request: Request<ConfirmDoubleCollectionRequest>,
    ) -> Result<Response<Receipt>, Status> {
        lead_or_forward!(
            self.gateway,
            request,
            HisServiceClient,
            confirm_double_collection
        );
        let r = request.into_inner();
        let g = &self.gateway;
        if r.request_id.len() > 60 {
            return Err(convert::invalid(
                convert::reason::INVALID_ID,
                "request_id: at most 60 characters here (.1 and .2 are added for the two steps)",
            ));
        }
        let bill = convert::bill_id(&r.bill_id)?;
        crate::api::admin::business_day(&r.date)?;
        g.read_barrier().await?;
        let key = format!("his-recon/{}", r.date);
        let listed = match crate::recon::stored_report(g, &key)? {
            Some(yinyi_ledger::Report::HisReconciliation(report)) => {
                report.differences.into_iter().any(|d| {
                    d.bill == bill
                        && d.kind == yinyi_ledger::HisDifferenceKind::LedgerOnly
                        && d.resolution.contains("double collection")
                })
            }
            _ => false,
        };
        if !listed {
            return Err(status_with_reason(
                Code::FailedPrecondition,
                convert::reason::NOT_A_DOUBLE_COLLECTION,
                format!(
                    "the HIS reconciliation of {} does not list bill {bill} as a likely double collection",
                    r.date
                ),
            ));
        }
        // Cancelled by HIS (a retry, or HIS had cancelled it already, goes on), then refunded
        // the way it was paid.
        let cancel = g.command(
            &format!("{}.1", r.request_id),
            &r.terminal_id,
            "",
            CommandBody::CancelBill { bill: bill.clone() },
        )?;
        let key = g.key_for_bill(&bill, &cancel.terminal);
        match g.submit(key, cancel).await {
            Ok(Effect::BillCancelled { .. }) => {}
            Ok(other) => return Err(unexpected(&other)),
            Err(status)
                if yinyi_api::error::reason_of(&status).as_deref() == Some("BILL_CANCELLED") => {}
            Err(status) => return Err(status),
        }
        let refund = RefundRequest {
            request_id: format!("{}.2", r.request_id),
            terminal_id: r.terminal_id,
            bill_id: r.bill_id,
            card_no: r.card_no,
            ..Default::default()
        };
        use yinyi_api::v1::payment_service_server::PaymentService;
        self.payments.refund(Request::new(refund)).await
    }

    async fn get_bill(&self, request: Request<GetBillRequest>) -> Result<Response<Bill>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, get_bill);
        let id = convert::bill_id(&request.into_inner().bill_id)?;
        self.gateway.read_barrier().await?;
        Ok(Response::new(self.bill(&id)?))
    }

    async fn insurance_report(
        &self,
        request: Request<InsuranceReportRequest>,
    ) -> Result<Response<InsuranceDayReport>, Status> {
        lead_or_forward!(self.gateway, request, HisServiceClient, insurance_report);
        let r = request.into_inner();
        crate::api::admin::business_day(&r.date)?;
        let limit = match r.limit {
            0 => MAX_INSURANCE_LINES,
            n if n as usize <= MAX_INSURANCE_LINES => n as usize,
            n => {
                return Err(convert::invalid(
                    crate::api::reason::INVALID_REQUEST,
                    format!("limit {n}: at most {MAX_INSURANCE_LINES} lines a page"),
                ));
            }
        };
        let cursor = |field: &str, value: &str| {
            if value.is_empty() {
                Ok(String::new())
            } else {
                convert::id(field, value, yinyi_ledger::BillId::parse).map(|b| b.to_string())
            }
        };
        let settled_after = cursor("settled_after", &r.settled_after)?;
        let reversed_after = cursor("reversed_after", &r.reversed_after)?;
        self.gateway.read_barrier().await?;
        let day = self
            .gateway
            .backend()
            .store()
            .insurance_day(
                &r.date.replace('-', ""),
                &settled_after,
                &reversed_after,
                limit,
            )
            .map_err(|e| {
                convert::internal(format!(
                    "the insured bills of {} are unreadable: {e}",
                    r.date
                ))
            })?;
        let page = |list: &yinyi_storage::InsuranceList| {
            let lines: Vec<InsuredBillLine> = list
                .lines
                .iter()
                .map(|(i, bill)| convert::insured_bill_line(i, bill.as_ref()))
                .collect();
            let next = match (list.more, lines.last()) {
                (true, Some(last)) => last.bill_id.clone(),
                _ => String::new(),
            };
            (lines, convert::insurance_totals(&list.splits), next)
        };
        let (settled, settled_total, settled_next) = page(&day.settled);
        let (reversed, reversed_total, reversed_next) = page(&day.reversed);
        Ok(Response::new(InsuranceDayReport {
            date: r.date,
            settled,
            reversed,
            settled_total: Some(settled_total),
            reversed_total: Some(reversed_total),
            settled_next,
            reversed_next,
        }))
    }
}
