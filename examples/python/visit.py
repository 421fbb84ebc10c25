#!/usr/bin/env python3
"""A patient's visit through yinyi's public gRPC API, with stock grpcio only.

A worked example for kiosk vendors (and anyone writing a client in Python): TLS with the
site's CA, the credential in metadata, retries that keep the request id, the leader hint, and
reading the reason of a refusal from its google.rpc.ErrorInfo. `make test` runs it against a
local 3-node cluster, so it cannot drift from the server. See README.md beside it.

Exit status 0 when every check held; 1 with the failed check on stderr otherwise.
"""
import argparse
import glob
import hashlib
import importlib
import importlib.resources
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import time
import types
from decimal import Decimal

import grpc
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from grpc_tools import protoc

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTOS = os.path.join(REPO, "api", "proto")
DOMAIN = "yinyi"  # ErrorInfo.domain of every yinyi reason
LEADER_HINT = "x-yinyi-leader"  # metadata naming the leader, sent with UNAVAILABLE when known
C = grpc.StatusCode
# Worth trying again with the SAME request id: no leader yet, an answer that did not come,
# overload or a credential's rate. The cluster applies a request id once and answers a retry
# with the first outcome, so a retry never pays twice, even when the lost answer was a success.
# CANCELLED too: this client never cancels, but the server (tonic) answers CANCELLED "Timeout
# expired" when the deadline we sent runs out there before our own timer fires.
RETRYABLE = {C.UNAVAILABLE, C.DEADLINE_EXCEEDED, C.RESOURCE_EXHAUSTED, C.CANCELLED}


class Failed(Exception):
    """A check that did not hold."""


def check(condition, what):
    if not condition:
        raise Failed(what)


def ok(line):
    print(f"ok   {line}", flush=True)


def load_stubs():
    """Generates the Python modules of api/proto/yinyi/v1/*.proto (payment_pb2,
    payment_pb2_grpc, ...) with grpc_tools' protoc and imports them. A vendor would generate
    them once and ship them; doing it at start keeps this example in step with the protos."""
    out = tempfile.mkdtemp(prefix="yinyi-stubs-")
    well_known = str(importlib.resources.files("grpc_tools") / "_proto")
    protos = sorted(glob.glob(os.path.join(PROTOS, "yinyi", "v1", "*.proto")))
    args = ["protoc", f"-I{PROTOS}", f"-I{well_known}", f"--python_out={out}",
            f"--grpc_python_out={out}", *protos]
    check(protos and protoc.main(args) == 0, f"protoc failed on {PROTOS}")
    sys.path.insert(0, out)
    names = [os.path.basename(p)[:-6] + kind for p in protos for kind in ("_pb2", "_pb2_grpc")]
    stubs = types.SimpleNamespace(**{n: importlib.import_module(f"yinyi.v1.{n}") for n in names})
    sys.path.remove(out)
    shutil.rmtree(out)  # every module is loaded
    return stubs


def error_info(err):
    """The google.rpc.ErrorInfo of a refusal, or None. The server sends a google.rpc.Status
    in the `grpc-status-details-bin` trailer; grpc_status decodes it (and checks that its code
    matches the call's), and the reason code is in one of its details."""
    try:
        status = rpc_status.from_call(err)
    except ValueError as mismatch:  # the Status's code or message is not the call's
        raise Failed(f"google.rpc.Status of {err.code().name}: {mismatch}") from None
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def describe(err):
    info = error_info(err)
    reason = f"{info.domain}/{info.reason}" if info else "(no ErrorInfo)"
    return f"{err.code().name} {reason}: {err.details()}"


class Cluster:
    """One TLS channel per node, and calls with retries."""

    def __init__(self, nodes, ca_pem, server_name, stubs):
        tls = grpc.ssl_channel_credentials(root_certificates=ca_pem)
        # Certificates made by `yinyi ctl certs` name `yinyi`, `localhost`, 127.0.0.1 and the
        # --hosts given to it; grpcio checks the host part of the address dialled. Dialling an
        # address the certificate does not name (behind NAT, a hospital CA that names only
        # `yinyi`)? Check the name every node certificate carries instead: --server-name yinyi
        # (what the Rust client does). It also becomes the :authority sent.
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        self.nodes = list(nodes)
        self.channels = {n: grpc.secure_channel(n, tls, options) for n in self.nodes}
        self.stubs = stubs
        self.current = self.nodes[0]

    def stub(self, node, service):
        module = {"PaymentService": "payment", "HisService": "his",
                  "TerminalService": "terminal", "AdminService": "admin"}[service]
        grpc_module = getattr(self.stubs, f"{module}_pb2_grpc")
        return getattr(grpc_module, f"{service}Stub")(self.channels[node])

    def call(self, credential, service, method, request, node=None, budget=20.0, timeout=5.0):
        """Calls `service/method`, retrying what RETRYABLE lists with the same request (so the
        same request id) and a growing pause, until `budget` seconds are spent. Any node
        serves (a follower forwards to the leader); when a node answers UNAVAILABLE naming the
        leader, the next attempt goes there. `node` pins the call to one node. Anything else
        is raised at once as the grpc.RpcError it is."""
        metadata = [("authorization", f"Bearer {credential}")]  # keys must be lowercase
        target = node or self.current
        end, pause, attempt = time.monotonic() + budget, 0.1, 0
        while True:
            attempt += 1
            try:
                rpc = getattr(self.stub(target, service), method)
                left = max(0.1, end - time.monotonic())
                reply = rpc(request, metadata=metadata, timeout=min(timeout, left))
                if node is None:
                    self.current = target  # keep talking to a node that answers
                return reply
            except grpc.RpcError as err:
                if err.code() not in RETRYABLE or time.monotonic() + pause > end:
                    raise
                hint = dict(err.trailing_metadata() or ()).get(LEADER_HINT)
                print(f"     retry {attempt}: {target} said {describe(err)}"
                      + (f" (leader: {hint})" if hint else ""), flush=True)
                # Follow the hint only to a node we were given: it is the address the nodes
                # use among themselves (their --peers), which this client may not reach.
                if node is None and hint in self.channels and hint != target:
                    target = hint
                    continue
                if node is None:
                    target = self.nodes[(self.nodes.index(target) + 1) % len(self.nodes)]
                time.sleep(pause * random.uniform(0.5, 1.0))
                pause = min(pause * 2, 2.0)


def expect_refusal(what, code, reason, attempt):
    """Runs `attempt` (one call) and checks it is refused with `code` and an ErrorInfo of
    domain yinyi: its reason `reason`, or any non-empty one when `reason` is None."""
    try:
        attempt()
    except grpc.RpcError as err:
        info = error_info(err)
        check(err.code() == code, f"{what}: expected {code.name}, got {describe(err)}")
        check(info is not None, f"{what}: {code.name} without a google.rpc.ErrorInfo detail "
                                f"({err.details()})")
        check(info.domain == DOMAIN and info.reason,
              f"{what}: ErrorInfo domain {info.domain!r} reason {info.reason!r}")
        check(reason is None or info.reason == reason,
              f"{what}: expected reason {reason}, got {info.reason}")
        return f"{code.name} {info.domain}/{info.reason}"
    raise Failed(f"{what}: accepted, expected {code.name} {reason or ''}")


def list_services(cluster, node):
    """Server reflection, v1alpha (what most tools still speak), on one node; no credential."""
    stub = reflection_pb2_grpc.ServerReflectionStub(cluster.channels[node])
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    try:
        answers = list(stub.ServerReflectionInfo(iter([ask]), timeout=5))
    except grpc.RpcError as err:
        raise Failed(f"reflection v1alpha on {node}: {describe(err)} (a server older than "
                     "this release serves only v1: --skip-reflection)") from None
    return sorted(s.name for a in answers for s in a.list_services_response.service)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", required=True, help="HOST:PORT,HOST:PORT,... (any node serves)")
    p.add_argument("--ca", required=True, help="the site CA (PEM) that signed the nodes")
    p.add_argument("--credential", required=True,
                   help="ID:SECRET with the roles admin, kiosk and his (a test site's bootstrap "
                        "credential)")
    p.add_argument("--prefix", required=True, type=str.upper,
                   help="unique per run, 1-12 letters or digits: in terminal ids, request ids, "
                        "card and bill numbers")
    p.add_argument("--server-name", help="name to check in node certificates (e.g. yinyi)")
    p.add_argument("--expect-no-leader", action="store_true",
                   help="the cluster has lost its quorum: a write must be refused UNAVAILABLE "
                        "with reason NO_LEADER")
    p.add_argument("--skip-reflection", action="store_true",
                   help="for servers older than this release, which serve only reflection v1")
    a = p.parse_args()
    check(re.fullmatch(r"[A-Z0-9]{1,12}", a.prefix), "--prefix: 1-12 letters or digits")
    stubs = load_stubs()
    pay, his, term, adm = stubs.payment_pb2, stubs.his_pb2, stubs.terminal_pb2, stubs.admin_pb2
    with open(a.ca, "rb") as f:
        cluster = Cluster(a.nodes.split(","), f.read(), a.server_name, stubs)
    ops = a.credential
    serial = 0

    def request_id(terminal):
        # A terminal's request ids: its id and its own serial (流水号), fresh per transaction.
        nonlocal serial
        serial += 1
        return f"{a.prefix}:{terminal}:{serial:06d}"

    # 1. Each node given: its role (ClusterStatus answers for the node asked) and the services
    #    it lists through reflection v1alpha. A node not reached is left out of what follows.
    roles = {}
    for node in cluster.nodes:
        try:
            roles[node] = cluster.call(ops, "AdminService", "ClusterStatus",
                                       adm.ClusterStatusRequest(), node=node, budget=1).node.state
        except grpc.RpcError as err:
            print(f"     {node} not reached: {describe(err)}", flush=True)
            continue
        if a.skip_reflection:
            ok(f"{node} ({roles[node]}): reflection skipped")
            continue
        services = list_services(cluster, node)
        for wanted in ("yinyi.v1.PaymentService", "yinyi.v1.HisService",
                       "yinyi.v1.TerminalService", "yinyi.v1.AdminService",
                       "grpc.health.v1.Health"):
            check(wanted in services, f"reflection on {node}: no {wanted} in {services}")
        ok(f"{node} ({roles[node]}): reflection v1alpha lists {len(services)} services")
    check(roles, "no node reached")
    if len(roles) == len(cluster.nodes) > 1 and not a.expect_no_leader:
        check({"Leader", "Follower"} <= set(roles.values()),
              f"want a leader and a follower among the nodes: {roles}")
    reached = list(roles)

    kiosk_t, his_t, admin_t = f"K-{a.prefix}", f"H-{a.prefix}", "A-ADMIN"
    card = f"HC{a.prefix}01"

    if a.expect_no_leader:
        # 2'. No quorum: a write is refused UNAVAILABLE / NO_LEADER, after the retries.
        deposit = pay.DepositCashRequest(request_id=request_id(kiosk_t), terminal_id=kiosk_t,
                                         card_no=card, amount="10")
        got = expect_refusal("deposit without a leader", C.UNAVAILABLE, "NO_LEADER",
                             lambda: cluster.call(ops, "PaymentService", "DepositCash",
                                                  deposit, budget=8))
        ok(f"deposit without a leader: {got}")
        return

    # 2. The hospital's IT, with the admin credential through its console A-ADMIN: registers
    #    the kiosk and the HIS terminal, and makes the kiosk's credential (role kiosk, bound to
    #    this kiosk). At a site: `yinyi ctl credential add K-0101 --roles kiosk --terminal
    #    K-0101`, and the kiosk is given the secret. The cluster keeps only its SHA-256.
    for t in (kiosk_t, his_t):
        cluster.call(ops, "TerminalService", "RegisterTerminal", term.RegisterTerminalRequest(
            request_id=request_id(admin_t), terminal_id=admin_t, new_terminal_id=t))
        ok(f"terminal {t} registered from {admin_t}")
    kiosk_id, secret = f"kiosk-{a.prefix.lower()}", secrets.token_hex(32)
    cluster.call(ops, "AdminService", "PutCredential", adm.PutCredentialRequest(
        request_id=request_id(admin_t), terminal_id=admin_t, credential_id=kiosk_id,
        roles=["kiosk"], bound_terminal_id=kiosk_t,
        secret_sha256=hashlib.sha256(secret.encode()).hexdigest()))
    kiosk = f"{kiosk_id}:{secret}"
    # Every node checks credentials itself, from its own copy of the replicated state: a new
    # credential is known on a follower once it has applied it, a moment after the leader
    # answered. Wait for that on each node (a kiosk set up ahead of time never sees it).
    for node in reached:
        end = time.monotonic() + 10
        while True:
            try:
                cluster.call(kiosk, "TerminalService", "Heartbeat",
                             term.HeartbeatRequest(terminal_id=kiosk_t), node=node)
                break
            except grpc.RpcError as err:
                check(err.code() == C.UNAUTHENTICATED and time.monotonic() < end,
                      f"heartbeat of {kiosk_t} on {node}: {describe(err)}")
                time.sleep(0.1)
    ok(f"credential {kiosk_id} (kiosk, bound to {kiosk_t}) known on {len(reached)} node(s)")

    # 3. The patient at the kiosk, with the kiosk's own credential. Money is a decimal string
    #    in yuan; a kiosk takes whole yuan. Compare amounts as Decimal, never float.
    person_key = hashlib.sha256(f"site-key:{a.prefix}:110101199001011234".encode()).hexdigest()
    issued = cluster.call(kiosk, "PaymentService", "IssueCard", pay.IssueCardRequest(
        request_id=request_id(kiosk_t), terminal_id=kiosk_t, card_no=card,
        card_kind=pay.CARD_KIND_HOSPITAL, holder_name="张三", person_key=person_key,
        id_masked="110101********1234", first_deposit="100"))
    check(Decimal(issued.balance) == 100, f"issue card: balance {issued.balance}, want 100")
    ok(f"card {card} issued: account {issued.account_id}, balance {issued.balance}")

    deposit = pay.DepositCashRequest(request_id=request_id(kiosk_t), terminal_id=kiosk_t,
                                     card_no=card, amount="50")
    first = cluster.call(kiosk, "PaymentService", "DepositCash", deposit)
    check(Decimal(first.balance) == 150, f"deposit: balance {first.balance}, want 150")
    ok(f"cash deposit 50: txn {first.txn_id}, balance {first.balance}")
    # The kiosk did not hear the answer (a timeout, a leader change): it sends the SAME
    # request again and gets the first outcome; the money is counted once.
    again = cluster.call(kiosk, "PaymentService", "DepositCash", deposit)
    check((again.txn_id, again.balance) == (first.txn_id, first.balance),
          f"retry of {deposit.request_id}: {again} differs from {first}")
    ok(f"retry of {deposit.request_id}: same txn {again.txn_id}, balance still {again.balance}")

    # 4. HIS posts the registration fee (its own terminal and role); the kiosk pays it from
    #    the prepaid account.
    bill = f"REG-{a.prefix}"
    cluster.call(ops, "HisService", "PostBill", his.PostBillRequest(
        request_id=request_id(his_t), terminal_id=his_t, bill_id=bill, card_no=card,
        kind=stubs.common_pb2.BILL_KIND_REGISTRATION, amount="30.50"))
    ok(f"HIS posted bill {bill}: 30.50")
    paid = cluster.call(kiosk, "PaymentService", "PayBill", pay.PayBillRequest(
        request_id=request_id(kiosk_t), terminal_id=kiosk_t, bill_id=bill, card_no=card))
    ok(f"bill {bill} paid from the account: balance {paid.balance}")
    balance = cluster.call(kiosk, "PaymentService", "QueryBalance",
                           pay.QueryBalanceRequest(card_no=card))
    want = Decimal("100") + Decimal("50") - Decimal("30.50")
    check(Decimal(balance.balance) == want == Decimal(paid.balance),
          f"balance {balance.balance} (after paying {paid.balance}), want {want}")
    ok(f"balance {balance.balance} = 100 + 50 - 30.50 (holder {balance.holder_name})")

    # 5. Refusals, on every node given: each is a gRPC status whose google.rpc.ErrorInfo
    #    carries the reason. A follower forwards to the leader and relays its refusal; a
    #    credential is checked by the node asked.
    def deposit_as(credential, terminal, amount="10", card_no=card, rid=None):
        return lambda node: cluster.call(credential, "PaymentService", "DepositCash",
                                         pay.DepositCashRequest(
                                             request_id=rid or request_id(terminal),
                                             terminal_id=terminal, card_no=card_no,
                                             amount=amount), node=node)

    def pay_again(node):
        return cluster.call(kiosk, "PaymentService", "PayBill", pay.PayBillRequest(
            request_id=request_id(kiosk_t), terminal_id=kiosk_t, bill_id=bill, card_no=card),
            node=node)

    def post_bill_as_kiosk(node):
        return cluster.call(kiosk, "HisService", "PostBill", his.PostBillRequest(
            request_id=request_id(kiosk_t), terminal_id=kiosk_t, bill_id=f"{bill}X",
            card_no=card, kind=stubs.common_pb2.BILL_KIND_OUTPATIENT, amount="1"), node=node)

    refusals = [
        ("an amount that is not one", C.INVALID_ARGUMENT, "INVALID_AMOUNT",
         deposit_as(kiosk, kiosk_t, amount="abc")),
        ("coins at a kiosk", C.INVALID_ARGUMENT, "INVALID_DENOMINATION",
         deposit_as(kiosk, kiosk_t, amount="12.50")),
        ("a card that does not exist", C.NOT_FOUND, "CARD_NOT_FOUND",
         deposit_as(kiosk, kiosk_t, card_no=f"HC{a.prefix}99")),
        ("a bill paid twice", C.FAILED_PRECONDITION, "BILL_ALREADY_PAID", pay_again),
        ("a request id reused for another amount", C.ALREADY_EXISTS, "REQUEST_ID_REUSED",
         deposit_as(kiosk, kiosk_t, amount="60", rid=deposit.request_id)),
        ("a wrong secret", C.UNAUTHENTICATED, None,
         deposit_as(f"{kiosk_id}:{secrets.token_hex(32)}", kiosk_t)),
        ("a method the kiosk's role may not call (PostBill)", C.PERMISSION_DENIED, None,
         post_bill_as_kiosk),
        ("another kiosk than the credential's", C.PERMISSION_DENIED, "WRONG_TERMINAL",
         deposit_as(kiosk, f"K-{a.prefix}X")),
        ("a terminal of the cluster itself (S-)", C.PERMISSION_DENIED, "SYSTEM_TERMINAL",
         deposit_as(ops, f"S-{a.prefix}")),
    ]
    for what, code, reason, attempt in refusals:
        got = {expect_refusal(f"{what} on {node}", code, reason, lambda: attempt(node))
               for node in reached}
        ok(f"refused {what}: {', '.join(sorted(got))} on {len(reached)} node(s)")

    after = cluster.call(kiosk, "PaymentService", "QueryBalance",
                         pay.QueryBalanceRequest(card_no=card))
    check(Decimal(after.balance) == want, f"balance after the refusals: {after.balance}")
    ok(f"balance after the refusals: {after.balance}, unchanged")


if __name__ == "__main__":
    try:
        main()
    except Failed as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as err:
        print(f"FAIL unexpected refusal: {describe(err)}", file=sys.stderr)
        sys.exit(1)
    print("all checks held")
