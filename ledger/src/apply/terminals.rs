//! The rules of terminals: registration and status, window shifts (班次/日结) and kiosk cash collections.

use super::*;

impl<V: StateView> Staged<'_, V> {
    /// The terminals commands.
    pub(super) fn execute_terminals(&mut self) -> Rule<Effect> {
        use TerminalKind::*;
        let cmd = self.cmd;
        match &cmd.body {
            CommandBody::RegisterTerminal { terminal } => {
                self.terminal_allowed()?;
                if matches!(terminal.kind(), Admin | System) {
                    return reject(
                        ReasonCode::TerminalNotAllowed,
                        format!(
                            "{terminal} is an admin or system terminal and needs no registration"
                        ),
                    );
                }
                if self.terminal(terminal).is_some() {
                    return reject(
                        ReasonCode::TerminalAlreadyRegistered,
                        format!("terminal {terminal} is already registered"),
                    );
                }
                self.terminals.insert(
                    terminal.clone(),
                    Terminal {
                        id: terminal.clone(),
                        kind: terminal.kind(),
                        status: TerminalStatus::InService,
                        cash_box: Money::ZERO,
                        shift: None,
                        shifts_opened: 0,
                        collections: 0,
                        registered_at: cmd.at,
                        today: None,
                    },
                );
                Ok(Effect::TerminalChanged {
                    terminal: terminal.clone(),
                    status: TerminalStatus::InService,
                })
            }
            CommandBody::SetTerminalStatus { terminal, status } => {
                self.terminal_allowed()?;
                let Some(mut t) = self.terminal(terminal) else {
                    return reject(
                        ReasonCode::TerminalNotRegistered,
                        format!("terminal {terminal} is not registered"),
                    );
                };
                if t.status == TerminalStatus::Retired {
                    return reject(
                        ReasonCode::TerminalOutOfService,
                        format!("terminal {terminal} is retired for good"),
                    );
                }
                t.status = *status;
                self.terminals.insert(t.id.clone(), t);
                Ok(Effect::TerminalChanged {
                    terminal: terminal.clone(),
                    status: *status,
                })
            }
            CommandBody::OpenShift => {
                let mut t = self.terminal_allowed()?.expect("windows are registered");
                let operator = self.operator()?;
                if t.shift.is_some() {
                    return reject(
                        ReasonCode::ShiftAlreadyOpen,
                        format!("window {} already has an open shift", t.id),
                    );
                }
                t.shifts_opened += 1;
                let seq = t.shifts_opened;
                t.shift = Some(Shift {
                    seq,
                    operator,
                    opened_at: cmd.at,
                    totals: Vec::new(),
                });
                self.terminals.insert(t.id.clone(), t);
                Ok(Effect::ShiftOpened {
                    terminal: cmd.terminal.clone(),
                    seq,
                })
            }
            CommandBody::CloseShift => {
                let mut t = self.terminal_allowed()?.expect("windows are registered");
                let Some(shift) = t.shift.take() else {
                    return reject(
                        ReasonCode::ShiftNotOpen,
                        format!("window {} has no open shift", t.id),
                    );
                };
                let report = ShiftReport {
                    terminal: t.id.clone(),
                    seq: shift.seq,
                    operator: shift.operator,
                    opened_at: shift.opened_at,
                    closed_at: cmd.at,
                    lines: shift.totals,
                    cash_expected: t.cash_box,
                };
                // The cash is handed over with the report: the box starts the next shift empty.
                t.cash_box = Money::ZERO;
                self.terminals.insert(t.id.clone(), t);
                self.reports.push(Report::Shift(report.clone()));
                Ok(Effect::ShiftClosed(report))
            }
            CommandBody::CollectCash { counted } => {
                let mut t = self.terminal_allowed()?.expect("kiosks are registered");
                let operator = self.operator()?;
                if counted.is_negative() {
                    return reject(
                        ReasonCode::InvalidAmount,
                        format!("counted cash {counted} is negative"),
                    );
                }
                t.collections += 1;
                let expected = t.cash_box;
                let report = CollectionReport {
                    terminal: t.id.clone(),
                    seq: t.collections,
                    operator,
                    at: cmd.at,
                    expected,
                    counted: *counted,
                    difference: counted
                        .checked_sub(expected)
                        .expect("cash amounts within range"),
                };
                t.cash_box = Money::ZERO;
                self.terminals.insert(t.id.clone(), t);
                self.reports.push(Report::Collection(report.clone()));
                Ok(Effect::CashCollected(report))
            }
            other => unreachable!("{} is not one of the terminals commands", other.name()),
        }
    }
}
