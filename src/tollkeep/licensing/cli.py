"""`tollkeep licenses`: issue, list, show, update, revoke, verify offline, export the JWKS, rotate
the signing key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tollkeep.cli.common import JsonOpt, id_table, out, print_table, runtime, show, when
from tollkeep.kit.actor import cli_actor
from tollkeep.licensing.service import UNSET
from tollkeep.licensing.verify import LicenseInvalid, keys_from_jwks, verify

app = typer.Typer(
    help="Licence keys (Ed25519 JWTs that verify offline) and their machines.", no_args_is_help=True
)


@app.command("issue")
def issue(
    customer_id: str,
    plan: Annotated[str, typer.Option(help="a plan of the catalog")],
    max_machines: Annotated[int | None, typer.Option(help="default: the plan's")] = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="no machine limit")] = False,
    expires_at: Annotated[str | None, typer.Option(help="ISO time (default: never)")] = None,
    grace_seconds: Annotated[int | None, typer.Option(help="offline grace (default 7 days)")] = None,
    note: str | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a licence; prints its key (give it to the customer)."""
    machines: Any = None if unlimited else (UNSET if max_machines is None else max_machines)
    with runtime() as tk:
        lic = tk.licenses.issue(
            customer_id,
            plan,
            max_machines=machines,
            expires_at=when(expires_at),
            grace_seconds=grace_seconds,
            note=note,
            actor=cli_actor(),
        )
    show(lic, as_json)


@app.command("list")
def list_(
    customer: Annotated[str | None, typer.Option(help="customer id")] = None,
    status: Annotated[str | None, typer.Option(help="active | revoked")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Licences, newest first."""
    with runtime() as tk:
        rows = tk.licenses.list(customer_id=customer, status=status)
    if as_json:
        show(rows, True)
        return
    t = id_table("id", "customer", "plan", "machines", "expires", "status", ids=("id", "customer"))
    for r in rows:
        limit = "∞" if r["max_machines"] is None else r["max_machines"]
        t.add_row(
            r["id"],
            r["customer_id"],
            r["plan"],
            f"{r['machines_active']}/{limit}",
            r["expires_at"] or "never",
            r["status"],
        )
    print_table(t)


@app.command("show")
def show_(license_id: str, as_json: JsonOpt = False) -> None:
    """A licence and its machines."""
    with runtime() as tk:
        show(tk.licenses.get(license_id), as_json)


@app.command("update")
def update(
    license_id: str,
    plan: Annotated[str | None, typer.Option(help="new plan (entitlements follow)")] = None,
    max_machines: Annotated[int | None, typer.Option()] = None,
    expires_at: Annotated[str | None, typer.Option(help="ISO time")] = None,
    as_json: JsonOpt = False,
) -> None:
    """New terms on the same licence id; prints the re-issued key."""
    with runtime() as tk:
        lic = tk.licenses.update(
            license_id,
            plan=plan,
            max_machines=UNSET if max_machines is None else max_machines,
            expires_at=UNSET if expires_at is None else when(expires_at),
            actor=cli_actor(),
        )
    show(lic, as_json)


@app.command("revoke")
def revoke(license_id: str, as_json: JsonOpt = False) -> None:
    """Revoke a licence (online validation fails; it joins the revocation list)."""
    with runtime() as tk:
        show(tk.licenses.revoke(license_id, actor=cli_actor()), as_json)


@app.command("jwks")
def jwks() -> None:
    """Print the public keys (a JWKS) to ship with your app for offline verification."""
    with runtime() as tk:
        print(json.dumps(tk.licenses.jwks(), indent=2))


@app.command("verify")
def verify_(
    key: str,
    jwks_file: Annotated[
        Path | None, typer.Option("--jwks", help="a JWKS file (default: this database's)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a licence key offline, as an app would (exit 1 when it is not valid)."""
    if jwks_file is not None:
        keys = keys_from_jwks(json.loads(jwks_file.read_text()))
    else:
        with runtime() as tk:
            keys = keys_from_jwks(tk.licenses.jwks())
    try:
        lic = verify(key.strip(), keys)
    except LicenseInvalid as exc:
        show({"valid": False, "code": exc.code, "message": exc.message}, as_json)
        raise typer.Exit(1) from None
    show({"valid": True, **dict(lic.claims)}, as_json)


@app.command("rotate-key")
def rotate_key(as_json: JsonOpt = False) -> None:
    """Retire the signing key and start signing with a new one (old keys stay in the JWKS)."""
    with runtime() as tk:
        out_ = tk.licenses.rotate_key(actor=cli_actor())
    show(out_, as_json)
    if not as_json:
        out.print("old licences keep verifying; ship the new JWKS with your next app release")
