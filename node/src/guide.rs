//! The API guide for client vendors (`docs/API.md`), made from the tables the node itself uses:
//! the methods from the API's descriptor set, who may call them from `auth::roles_for`, the
//! reasons from the ledger's `ReasonCode::ALL` and the API's `convert::API_REASONS`, the id
//! syntax from the ledger's id types, the business rules from `Rules::default()`, the values of
//! `Transaction.kind` from `EntryKind::ALL`. `yinyi api-guide` prints it; a test keeps
//! `docs/API.md` equal to it, so the guide cannot drift from the server.

use std::fmt::Write as _;

use prost::Message as _;
use tonic::Code;
use yinyi_ledger::{
    AdmissionId, BillId, CardNo, CardToken, EntryKind, InsuranceSettlementId, OperatorId,
    PersonKey, ReasonCode, Rejection, RequestId, Role, Rules, TerminalId, WardId,
};

use crate::api::auth::roles_for;
use crate::api::convert::{API_REASONS, rejected, screaming};

/// The name of a gRPC status code as every language's library spells it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Every method of the public API as (service, method), in the protos' order.
pub fn api_methods() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(yinyi_api::v1::FILE_DESCRIPTOR_SET)
        .expect("the API's descriptor set decodes");
    let mut methods = Vec::new();
    for file in set.file {
        for service in &file.service {
            for method in &service.method {
                methods.push((service.name().to_string(), method.name().to_string()));
            }
        }
    }
    methods
}

const INTRO: &str = "# yinyi API guide

For vendors of kiosks, cashier windows, HIS and mobile channels. The contract is the protos in
`api/proto/yinyi/v1/` (gRPC over HTTP/2 with TLS); this guide says what they cannot: who may
call what, the syntax of every id, the rules the ledger enforces and every reason a call can be
refused for. It is generated from the node's own tables (`yinyi api-guide > docs/API.md`; a
test fails when it differs), so it is what the server does. A worked client in Python is in
`examples/python/` and runs in the project's tests.

## Connecting

- **TLS** with the site CA (`ca.pem` from `yinyi ctl certs`): the nodes' certificates name the
  addresses they are reached at and `yinyi`; a client that dials another name sets the TLS
  server name to `yinyi` (`grpc.ssl_target_name_override` in grpcio).
- **Credential** on every call: metadata `authorization: Bearer ID:SECRET`. An administrator
  issues one per terminal or service (`yinyi ctl credential add ID --roles kiosk --terminal
  K-0101`), optionally bound to one terminal. A credential created a moment ago may not be
  known yet to a node that lags: `UNAUTHENTICATED CREDENTIAL_UNKNOWN` for a second; retry.
- **Any node** serves every call: a follower forwards writes to the leader.
- **Reflection**: `grpc.reflection.v1` and `grpc.reflection.v1alpha` on every node, with the
  `google.rpc` types, so grpcurl, evans and grpcio-reflection list the services and print
  error details. Health: `grpc.health.v1.Health`.
- **Money** is a decimal string with at most two places (`\"12.50\"`), never a float.

## Errors and retries

A refusal is a gRPC status whose details (`grpc-status-details-bin`, a `google.rpc.Status`)
hold a `google.rpc.ErrorInfo` with `domain` `yinyi` and a stable `reason`: switch on the
reason, not on the message (one status code covers several reasons). Every refusal carries one,
authentication and role refusals included.

Every write carries a `request_id` made by the terminal (terminal id + its serial, 流水号). The
same id again returns the first outcome and changes nothing, so a client whose call failed in
an unknown way (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `CANCELLED`, a dropped connection) sends
the same request again, with the same id, with backoff, to any node. A request id used for a
different request is refused (`ALREADY_EXISTS REQUEST_ID_REUSED`). Request ids protect against
retries for the cluster's retention period (30 days by default).

";

fn table(out: &mut String, header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        header.iter().map(|_| "---|").collect::<String>()
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out.push('\n');
}

/// The whole guide.
pub fn render() -> String {
    let mut out = String::from(INTRO);

    out.push_str("### Reasons the API gives\n\n");
    table(
        &mut out,
        &["reason", "status", "meaning"],
        API_REASONS.iter().map(|(reason, code, meaning)| {
            vec![
                format!("`{reason}`"),
                code_name(*code).to_string(),
                meaning.to_string(),
            ]
        }),
    );
    out.push_str(
        "### Reasons the ledger gives\n\nThe ledger's refusals of a well-formed request: \
         nothing was done.\n\n",
    );
    table(
        &mut out,
        &["reason", "status"],
        ReasonCode::ALL.iter().map(|code| {
            let status = rejected(&Rejection::new(*code, ""));
            vec![
                format!("`{}`", code.as_str()),
                code_name(status.code()).to_string(),
            ]
        }),
    );

    out.push_str(
        "## Who may call what\n\nA credential holds one or more roles; each role acts \
         through terminals of one kind, and a write names its terminal (`terminal_id`), which \
         must be of that kind (`PERMISSION_DENIED WRONG_TERMINAL_KIND`), registered \
         (`NOT_FOUND TERMINAL_NOT_REGISTERED`) and, for a bound credential, the one it is bound \
         to (`WRONG_TERMINAL`). Terminals are registered by an administrator from an `A-` \
         terminal (`TerminalService.RegisterTerminal`). `S-` terminals are the cluster's own.\n\n",
    );
    table(
        &mut out,
        &["role", "acts through terminals"],
        Role::ALL.iter().map(|role| {
            vec![
                format!("`{}`", role.as_str()),
                match role.terminal_kind() {
                    Some(kind) => format!("`{}-…`", kind.prefix()),
                    None => "none (reads only, or notifications)".to_string(),
                },
            ]
        }),
    );
    table(
        &mut out,
        &["method", "roles that may call it"],
        api_methods().into_iter().map(|(service, method)| {
            let roles = match roles_for(&service, &method) {
                Some(roles) => roles
                    .iter()
                    .map(|r| format!("`{}`", r.as_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
                None => "none".to_string(),
            };
            vec![format!("`{service}.{method}`"), roles]
        }),
    );

    out.push_str("## Identifiers\n\n");
    table(
        &mut out,
        &["field", "syntax"],
        [
            ("terminal ids (`terminal_id`)", TerminalId::RULE),
            ("request ids (`request_id`)", RequestId::RULE),
            ("card numbers (`card_no`)", CardNo::RULE),
            ("bill ids (`bill_id`)", BillId::RULE),
            ("admission ids (`admission_id`)", AdmissionId::RULE),
            ("ward ids (`ward_id`)", WardId::RULE),
            (
                "insurance settlement ids (`settlement_id`)",
                InsuranceSettlementId::RULE,
            ),
            ("operator ids (`operator_id`)", OperatorId::RULE),
            ("`person_key`", PersonKey::RULE),
            ("bank card tokens", CardToken::RULE),
        ]
        .into_iter()
        .map(|(field, rule)| vec![field.to_string(), rule.to_string()]),
    );
    out.push_str(
        "Request ids beginning `saga:` are the cluster's own and refused. `person_key` is a \
         keyed hash (HMAC) of the patient's ID number made by the terminal: the cluster never \
         sees the number. Holder names and phones are sealed at rest; a client sends them in \
         the clear over TLS.\n\n",
    );

    let rules = Rules::default();
    let _ = write!(
        out,
        "## Rules the ledger enforces\n\n\
         The limits below are the defaults; an admin changes them for the whole cluster with \
         `AdminService.SetRules` (`GetRules` shows those in force).\n\n\
         - One account per person (`person_key`); a card belongs to one account.\n\
         - No single transaction above {} (`INVALID_AMOUNT`).\n\
         - A first deposit at card issue of at least {} (`BELOW_MINIMUM_DEPOSIT`).\n\
         - Kiosks take whole yuan in notes (`INVALID_DENOMINATION`).\n\
         - A window (`W-`) handles cash only with an open shift (`TerminalService.OpenShift`, \
         `FAILED_PRECONDITION SHIFT_NOT_OPEN`), and names its operator (`OPERATOR_REQUIRED`).\n\
         - Overdraft (绿色通道) at most {} (`OVERDRAFT_ABOVE_MAXIMUM`).\n\
         - A payment needs the balance plus any overdraft (`INSUFFICIENT_FUNDS`); a frozen \
         account pays nothing (`ACCOUNT_FROZEN`); a lost card pays nothing (`CARD_LOST`).\n\
         - Refunds (`PaymentService.Refund`): HIS cancels a paid bill whole or in parts \
         (`HisService.CancelBill` with `amount`); refunds may be repeated up to what HIS \
         cancelled (`INVALID_AMOUNT` above it, `REFUND_NOT_ALLOWED` before any cancel, \
         `ALREADY_REFUNDED` once all of it is refunded). `destination` names where the money \
         goes: `ORIGINAL` (the default: the account for a bill paid from it, online to the card \
         or channel that paid otherwise), `ACCOUNT`, or `CASH` at a window with an open shift. \
         Money paid by card or channel goes only back there until that online refund is \
         declined; then `after_declined_bank_ref` lets it go to the account or in cash \
         (`REFUND_CHANNEL_NOT_ALLOWED` otherwise). An invoiced bill (`HisService.MarkInvoiced`) \
         is refunded only at a window (`TERMINAL_NOT_ALLOWED`).\n\
         - `PaymentService.BatchRefund` (a clinic cancelled): up to 1,000 bills, each refunded \
         whole the way it was paid under request id `BATCH_ID.NNNN` (its position); sending the \
         same batch again refunds nobody twice and finishes what was left, and a reply line \
         per bill says REFUNDED, PENDING (an online refund under way: send again) or REFUSED \
         with the reason.\n\
         - Inpatients (`InpatientService`): HIS opens an episode (`OpenEpisode`, \
         `EPISODE_EXISTS` for an admission id seen before), posts daily charges and the final \
         amount (`EPISODE_NOT_OPEN` once final or discharged). Deposits go in until discharge, \
         in cash, from a prepaid account (the patient's or a relative's; never the overdraft, \
         `INSUFFICIENT_FUNDS`), by card or channel (through the patient's card; \
         `EPISODE_NOT_FOUND` for another patient's). `Settle` needs the final amount and no \
         deposit waiting for the bank (`EPISODE_OPERATION_IN_PROGRESS`); a shortfall comes \
         from the account only when asked (`EPISODE_SHORTFALL` otherwise); a surplus goes \
         back online first, oldest deposit first (references `Z…`), the rest into the \
         account or in cash at a window. Charges and final amounts may reach 10,000,000.00.\n\n",
        rules.single_txn_limit, rules.min_first_deposit, rules.max_overdraft
    );

    out.push_str(
        "## `Transaction.kind`\n\nA string (new kinds may be added; treat an unknown one as \
         \"other\"):\n\n",
    );
    table(
        &mut out,
        &["kind", "meaning", "balance"],
        EntryKind::ALL.iter().map(|kind| {
            vec![
                format!("`{}`", screaming(kind)),
                kind.meaning().to_string(),
                match kind.balance_sign() {
                    1 => "credit",
                    -1 => "debit",
                    _ => "unchanged",
                }
                .to_string(),
            ]
        }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/API.md` is what the node says it is; regenerate it with
    /// `yinyi api-guide > docs/API.md` after changing a table.
    #[test]
    fn the_api_guide_in_docs_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/API.md");
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            written == render(),
            "{} differs from the node's tables: run `yinyi api-guide > docs/API.md`",
            path.display()
        );
    }

    /// The protos (the contract vendors receive) state the id syntax and the kinds of
    /// `Transaction.kind` the node uses.
    #[test]
    fn the_protos_comments_agree_with_the_node() {
        let common = include_str!("../../api/proto/yinyi/v1/common.proto");
        for rule in [
            TerminalId::RULE,
            CardNo::RULE,
            BillId::RULE,
            OperatorId::RULE,
            PersonKey::RULE,
        ] {
            assert!(common.contains(rule), "common.proto does not say {rule:?}");
        }
        assert!(common.contains(&RequestId::RULE.to_string()));
        let payment = include_str!("../../api/proto/yinyi/v1/payment.proto");
        for kind in EntryKind::ALL {
            assert!(
                payment.contains(&screaming(&kind)),
                "payment.proto does not list {kind:?}"
            );
        }
    }

    /// Every reason the API's code can give is in the guide's table.
    #[test]
    fn every_api_reason_is_listed() {
        let source = [
            include_str!("api/convert.rs"),
            include_str!("api/auth.rs"),
            include_str!("api/mod.rs"),
            include_str!("api/payment.rs"),
            include_str!("api/admin.rs"),
        ]
        .concat();
        let listed: Vec<&str> = API_REASONS.iter().map(|(r, _, _)| *r).collect();
        for line in source.lines() {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("pub const ")
                && let Some((_, value)) = rest.split_once("&str = \"")
            {
                let reason = value.trim_end_matches("\";");
                if reason.chars().all(|c| c.is_ascii_uppercase() || c == '_') && !reason.is_empty()
                {
                    assert!(listed.contains(&reason), "{reason} is not in API_REASONS");
                }
            }
        }
        for method in api_methods() {
            assert!(
                roles_for(&method.0, &method.1).is_some(),
                "{method:?} has no roles"
            );
        }
    }
}
