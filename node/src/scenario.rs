//! Ready-made ledger commands for the demo, the benchmark and tests: a hospital's terminals and
//! patients, with request ids made the way terminals make them (terminal id + serial).

use yinyi_ledger::*;

/// Makes commands with fresh request ids under a prefix (unique per run).
pub struct Scenario {
    prefix: String,
    serial: u64,
}

pub const ADMIN: &str = "A-ADMIN";
pub const HIS: &str = "H-HIS";
pub const KIOSK: &str = "K-0101";
pub const WINDOW: &str = "W-03";

fn id<T>(parsed: Result<T, IdError>) -> T {
    parsed.expect("scenario ids are valid by construction")
}

/// A person key for patient number `n` (stands in for the keyed hash of an ID number).
pub fn person(n: u64) -> PersonKey {
    id(PersonKey::parse(&format!("{n:064x}")))
}

pub fn card(n: u64) -> CardNo {
    id(CardNo::parse(&format!("HC{n:08}")))
}

impl Scenario {
    pub fn new(prefix: &str) -> Scenario {
        Scenario {
            prefix: prefix.to_string(),
            serial: 0,
        }
    }

    pub fn command(
        &mut self,
        terminal: &str,
        operator: Option<&str>,
        body: CommandBody,
    ) -> Command {
        self.serial += 1;
        Command {
            request: id(RequestId::parse(&format!(
                "{}:{terminal}:{:06}",
                self.prefix, self.serial
            ))),
            terminal: id(TerminalId::parse(terminal)),
            operator: operator.map(|o| id(OperatorId::parse(o))),
            at: Timestamp(0),
            body,
        }
    }

    /// Registers the kiosk, the window and HIS, and opens a shift at the window.
    pub fn setup_hospital(&mut self) -> Vec<Command> {
        let mut out: Vec<Command> = [KIOSK, WINDOW, HIS]
            .iter()
            .map(|t| {
                self.command(
                    ADMIN,
                    None,
                    CommandBody::RegisterTerminal {
                        terminal: id(TerminalId::parse(t)),
                    },
                )
            })
            .collect();
        out.push(self.command(WINDOW, Some("op-li"), CommandBody::OpenShift));
        out
    }

    pub fn issue_card(&mut self, n: u64, first_deposit_yuan: Option<i64>) -> Command {
        self.command(
            KIOSK,
            None,
            CommandBody::IssueCard {
                card: card(n),
                card_kind: CardKind::Hospital,
                holder: Holder {
                    name: format!("patient {n}"),
                    person: person(n),
                    id_masked: format!("110***********{:04}", n % 10_000),
                    phone: "138****0000".into(),
                },
                first_deposit: first_deposit_yuan.map(Money::from_yuan),
            },
        )
    }

    pub fn deposit(&mut self, n: u64, yuan: i64) -> Command {
        self.command(
            KIOSK,
            None,
            CommandBody::DepositCash {
                card: card(n),
                amount: Money::from_yuan(yuan),
            },
        )
    }

    pub fn post_bill(&mut self, n: u64, bill: &str, cents: i64) -> Command {
        self.command(
            HIS,
            None,
            CommandBody::PostBill {
                bill: id(BillId::parse(bill)),
                card: card(n),
                kind: BillKind::Outpatient,
                amount: Money::from_cents(cents),
            },
        )
    }

    pub fn pay_bill(&mut self, n: u64, bill: &str) -> Command {
        self.command(
            KIOSK,
            None,
            CommandBody::PayBill {
                bill: id(BillId::parse(bill)),
                card: card(n),
            },
        )
    }
}
