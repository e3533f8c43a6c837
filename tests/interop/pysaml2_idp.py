#!/usr/bin/env python3
"""A small, real SAML 2.0 Identity Provider built on pysaml2, for interop tests.

It is an independent peer for varco's service provider: it reads the SP's metadata,
verifies the SP's signed AuthnRequest (HTTP-Redirect binding, or HTTP-POST with an
embedded signature) with pysaml2, authenticates a fixed user without any UI, and answers
with an HTML page holding an HTTP-POST form to the SP's AssertionConsumerService carrying
a SPID/CIE-shaped Response with a signed Assertion.

    python3 tests/interop/pysaml2_idp.py --port P --base-url http://127.0.0.1:P \
        --entity-id http://127.0.0.1:P/idp --cert CERT.pem --key KEY.pem \
        --sp-metadata SP_METADATA.xml --metadata-out IDP_METADATA.xml \
        --profile spid|cie --fiscal-number TINIT-RSSMRA80A01H501U \
        --name Mario --family-name Rossi --date-of-birth 1980-01-01

The IdP metadata is written to --metadata-out before the socket is served; then exactly
one line `ready` goes to stdout. Endpoints:

    GET  /sso       AuthnRequest, HTTP-Redirect binding (signature in the query)
    POST /sso       AuthnRequest, HTTP-POST binding (enveloped XML signature)
    GET  /slo       LogoutRequest, HTTP-Redirect binding -> 302 to the SP's
                    SingleLogoutService with a signed LogoutResponse (HTTP-Redirect)
    GET  /metadata  the IdP metadata

Requests that are unsigned or badly signed get 400. Logs go to stderr.
Needs: pip install -r tests/interop/requirements.txt, and the xmlsec1 binary.
"""

import argparse
import base64
import html
import logging
import os
import re
import secrets
import shutil
import sys
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import load_der_x509_certificate

try:  # pysaml2 7.5.5 still touches cryptography's moved CFB mode at import time
    from cryptography.utils import CryptographyDeprecationWarning

    warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)
except ImportError:
    pass

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, saml
from saml2.attribute_converter import AttributeConverter
from saml2.config import IdPConfig
from saml2.metadata import entity_descriptor, metadata_tostring_fix
from saml2.saml import NAME_FORMAT_BASIC, NAMEID_FORMAT_TRANSIENT
from saml2.response import IncorrectlySigned
from saml2.s_utils import decode_base64_and_inflate
from saml2.server import Server
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

LOG = logging.getLogger("pysaml2_idp")

SPID_LEVELS = (
    "https://www.spid.gov.it/SpidL1",
    "https://www.spid.gov.it/SpidL2",
    "https://www.spid.gov.it/SpidL3",
)

# Attribute names released, exactly as SPID/CIE name them (NameFormat basic).
ATTRIBUTES = ("fiscalNumber", "name", "familyName", "dateOfBirth")


class BadRequest(Exception):
    """Refused with HTTP 400."""


def basic_attribute_converter():
    """A pysaml2 converter mapping our local attribute names 1:1 to SPID's basic names."""
    conv = AttributeConverter(NAME_FORMAT_BASIC)
    conv.from_dict(
        {
            "identifier": NAME_FORMAT_BASIC,
            "to": {n: n for n in ATTRIBUTES},
            "fro": {n: n for n in ATTRIBUTES},
        }
    )
    return conv


class SpidIdpServer(Server):
    """pysaml2's IdP Server with the few SPID/CIE details pysaml2 has no option for.

    The Assertion is post-processed in ``setup_assertion`` which runs before pysaml2
    attaches the signature template and signs, so the changes are covered by the
    Assertion's signature.
    """

    def __init__(self, *args, profile="spid", **kwargs):
        super().__init__(*args, **kwargs)
        self.profile = profile

    def setup_assertion(self, *args, **kwargs):
        assertion = super().setup_assertion(*args, **kwargs)
        if isinstance(assertion, saml.Assertion):
            if self.profile == "cie":
                # CIE's IdP puts no Format on the Assertion's Issuer (the Response's
                # Issuer, built separately by pysaml2, keeps Format=entity).
                assertion.issuer = saml.Issuer(text=self.config.entityid)
            for stmt in assertion.attribute_statement:
                for attr in stmt.attribute:
                    # SPID IdPs send Name + NameFormat only.
                    attr.friendly_name = None
        return assertion


def build_config(args):
    base = args.base_url.rstrip("/")
    xmlsec = shutil.which("xmlsec1")
    if not xmlsec:
        sys.exit("pysaml2_idp: the xmlsec1 binary is required (Debian package xmlsec1)")
    conf = {
        "entityid": args.entity_id,
        "xmlsec_binary": xmlsec,
        "key_file": args.key,
        "cert_file": args.cert,
        "metadata": {"local": [args.sp_metadata]},
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "accepted_time_diff": 60,
        "delete_tmpfiles": True,
        "organization": {
            "name": [("pysaml2 interop IdP", "it"), ("pysaml2 interop IdP", "en")],
            "display_name": [("IdP di prova pysaml2", "it"), ("pysaml2 test IdP", "en")],
            "url": [(base + "/", "it"), (base + "/", "en")],
        },
        "service": {
            "idp": {
                "name": "pysaml2 interop IdP",
                "endpoints": {
                    "single_sign_on_service": [
                        (base + "/sso", BINDING_HTTP_REDIRECT),
                        (base + "/sso", BINDING_HTTP_POST),
                    ],
                    "single_logout_service": [
                        (base + "/slo", BINDING_HTTP_REDIRECT),
                    ],
                },
                # Every AuthnRequest / LogoutRequest must be signed by a key of the SP's
                # metadata (HTTP-Redirect: the query signature).
                "want_authn_requests_signed": True,
                "sign_assertion": True,
                "sign_response": args.sign_response == "yes",
                "encrypt_assertion": False,
                "name_id_format": [NAMEID_FORMAT_TRANSIENT],
                "policy": {
                    "default": {
                        "lifetime": {"minutes": 5},
                        "name_form": NAME_FORMAT_BASIC,
                        "fail_on_missing_requested": False,
                    },
                },
            },
        },
    }
    cfg = IdPConfig()
    cfg.load(conf)
    cfg.attribute_converters = [basic_attribute_converter()]
    return cfg


def metadata_xml(cfg):
    ed = entity_descriptor(cfg)
    # pysaml2 always adds an <md:Extensions> listing every algorithm xmlsec1 knows
    # (md5, sha1, ...), which no SPID IdP advertises: drop it.
    if ed.extensions is not None and all(
        e.namespace == "urn:oasis:names:tc:SAML:metadata:algsupport"
        for e in (ed.extensions.extension_elements or [])
    ):
        ed.extensions = None
    return metadata_tostring_fix(ed, {"xs": "http://www.w3.org/2001/XMLSchema"}, ed.to_string())


class Idp:
    def __init__(self, args):
        self.args = args
        self.cfg = build_config(args)
        self.server = SpidIdpServer(config=self.cfg, profile=args.profile)
        self.metadata = metadata_xml(self.cfg)
        if isinstance(self.metadata, str):
            self.metadata = self.metadata.encode("utf-8")
        self.lock = threading.Lock()  # pysaml2's Server is not thread-safe
        # Values as one-element lists: with plain strings pysaml2's release filter
        # crashes (str has no .extend) when an attribute is requested by more than one
        # AttributeConsumingService of the SP metadata.
        self.identity = {
            "fiscalNumber": [args.fiscal_number],
            "name": [args.name],
            "familyName": [args.family_name],
            "dateOfBirth": [args.date_of_birth],
        }

    # -- SSO -------------------------------------------------------------------------

    def sso(self, binding, params, raw_query=""):
        saml_request = params.get("SAMLRequest")
        if not saml_request:
            raise BadRequest("no SAMLRequest")
        relay_state = params.get("RelayState")
        sigalg = params.get("SigAlg")
        signature = params.get("Signature")
        if binding == BINDING_HTTP_REDIRECT and (not sigalg or not signature):
            raise BadRequest("the AuthnRequest is not signed (SigAlg/Signature missing)")
        with self.lock:
            try:
                req = self.server.parse_authn_request(
                    saml_request,
                    binding,
                    relay_state=relay_state,
                    sigalg=sigalg,
                    signature=signature,
                )
            except Exception as exc:  # pysaml2 raises many kinds
                if binding == BINDING_HTTP_REDIRECT and isinstance(exc, IncorrectlySigned):
                    self.explain_redirect_refusal(raw_query, saml_request)
                raise BadRequest(f"AuthnRequest refused by pysaml2: {type(exc).__name__}: {exc}")
            if req is None:
                raise BadRequest("AuthnRequest refused by pysaml2")
            msg = req.message
            LOG.info(
                "AuthnRequest %s from %s (ACS index %s, binding %s)",
                msg.id,
                msg.issuer.text if msg.issuer is not None else "?",
                msg.assertion_consumer_service_index,
                binding,
            )
            try:
                # ACS from the SP metadata, by AssertionConsumerServiceIndex (or URL).
                rargs = self.server.response_args(msg, [BINDING_HTTP_POST])
            except Exception as exc:
                raise BadRequest(f"no HTTP-POST AssertionConsumerService for this request: {exc}")
            acs = rargs["destination"]
            sp_entity_id = rargs["sp_entity_id"]

            class_ref = requested_class_ref(msg)
            identity = self.released_identity(sp_entity_id, msg.attribute_consuming_service_index)
            name_id = saml.NameID(
                format=NAMEID_FORMAT_TRANSIENT,
                name_qualifier=self.cfg.entityid,
                text="_" + secrets.token_hex(16),
            )
            response = self.server.create_authn_response(
                identity=identity,
                in_response_to=msg.id,
                destination=acs,
                sp_entity_id=sp_entity_id,
                name_id_policy=rargs.get("name_id_policy"),
                name_id=name_id,
                authn={"class_ref": class_ref},
                sign_assertion=True,
                sign_response=self.args.sign_response == "yes",
                encrypt_assertion=False,
                sign_alg=SIG_RSA_SHA256,
                digest_alg=DIGEST_SHA256,
            )
        xml = str(response)
        LOG.info("Response to %s for %s at %s (%s)", msg.id, sp_entity_id, acs, class_ref)
        LOG.debug("Response XML: %s", xml)
        b64 = base64.b64encode(xml.encode("utf-8")).decode("ascii")
        return post_form(acs, b64, relay_state)

    def released_identity(self, sp_entity_id, acs_index):
        """The user's attributes the requested AttributeConsumingService asks for.

        pysaml2's release policy filters on the union of all the SP's
        AttributeConsumingService elements (it ignores AttributeConsumingServiceIndex);
        SPID releases the set of the requested index, so narrow it here first."""
        identity = {k: list(v) for k, v in self.identity.items()}
        if acs_index is None:
            return identity
        req = self.server.metadata.attribute_requirement(sp_entity_id, index=acs_index)
        names = {a["name"] for a in req["required"] + req["optional"]}
        if not names:
            raise BadRequest(f"AttributeConsumingServiceIndex {acs_index} is not in the SP metadata")
        return {k: v for k, v in identity.items() if k in names}

    # -- SLO -------------------------------------------------------------------------

    def slo(self, params, raw_query=""):
        saml_request = params.get("SAMLRequest")
        if not saml_request:
            raise BadRequest("no SAMLRequest")
        relay_state = params.get("RelayState")
        sigalg = params.get("SigAlg")
        signature = params.get("Signature")
        if not sigalg or not signature:
            raise BadRequest("the LogoutRequest is not signed (SigAlg/Signature missing)")
        with self.lock:
            try:
                req = self.server.parse_logout_request(
                    saml_request,
                    BINDING_HTTP_REDIRECT,
                    relay_state=relay_state,
                    sigalg=sigalg,
                    signature=signature,
                )
            except Exception as exc:
                if isinstance(exc, IncorrectlySigned):
                    self.explain_redirect_refusal(raw_query, saml_request)
                raise BadRequest(f"LogoutRequest refused by pysaml2: {type(exc).__name__}: {exc}")
            if req is None:
                raise BadRequest("LogoutRequest refused by pysaml2")
            try:
                resp = self.server.create_logout_response(
                    req.message,
                    [BINDING_HTTP_REDIRECT],
                    sign=False,  # Redirect binding: the query is signed instead
                    sign_alg=SIG_RSA_SHA256,
                    digest_alg=DIGEST_SHA256,
                )
                dest = resp.destination
                info = self.server.apply_binding(
                    BINDING_HTTP_REDIRECT,
                    str(resp),
                    destination=dest,
                    relay_state=relay_state or "",
                    response=True,
                    sign=True,
                    sigalg=SIG_RSA_SHA256,
                )
            except Exception as exc:
                raise BadRequest(f"no HTTP-Redirect SingleLogoutService for this request: {exc}")
        location = dict(info["headers"])["Location"]
        LOG.info("LogoutRequest %s -> LogoutResponse %s to %s", req.message.id, resp.id, dest)
        return location


    def explain_redirect_refusal(self, raw_query, saml_request):
        """Diagnostic only (never accepts anything): pysaml2 does not verify a Redirect
        signature over the octets received, as SAML Bindings 3.4.4.1 says, but over
        urlencode()'d re-encodings of the decoded values (quote_plus: space as '+',
        A-Z a-z 0-9 _ . - ~ left alone). When the raw octets verify but pysaml2 refused,
        say so on stderr so the test log shows why."""
        try:
            parts = raw_query.split("&")
            signed = "&".join(
                p for name in ("SAMLRequest", "RelayState", "SigAlg")
                for p in parts if p.split("=", 1)[0] == name
            )
            sig = next(p.split("=", 1)[1] for p in parts if p.startswith("Signature="))
            sig = base64.b64decode(unquote(sig))
            xml = decode_base64_and_inflate(saml_request)
            issuer = re.search(rb"<(?:\w+:)?Issuer\b[^>]*>([^<]+)<", xml).group(1).decode().strip()
            for _name, cert in self.server.metadata.certs(issuer, "any", "signing"):
                key = load_der_x509_certificate(base64.b64decode(cert)).public_key()
                try:
                    key.verify(sig, signed.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
                except Exception:
                    continue
                LOG.warning(
                    "the raw query octets DO verify with %s's key; pysaml2 refused because it "
                    "re-encodes the parameters with urlencode() before verifying (e.g. a space "
                    "must be sent as '+', not '%%20')", issuer,
                )
                return
            LOG.warning("the raw query octets do not verify either")
        except Exception as exc:
            LOG.debug("no diagnostic: %s", exc)


def requested_class_ref(msg):
    rac = msg.requested_authn_context
    if rac is None or not rac.authn_context_class_ref:
        raise BadRequest("the AuthnRequest has no RequestedAuthnContext/AuthnContextClassRef")
    ref = (rac.authn_context_class_ref[0].text or "").strip()
    if ref not in SPID_LEVELS:
        raise BadRequest(f"unsupported AuthnContextClassRef {ref!r}")
    return ref


def post_form(action, saml_response, relay_state):
    esc = lambda s: html.escape(s, quote=True)  # noqa: E731
    lines = [
        "<!DOCTYPE html>",
        '<html><head><meta charset="utf-8"><title>pysaml2 IdP</title></head><body>',
        f'<form method="post" action="{esc(action)}">',
        f'<input type="hidden" name="SAMLResponse" value="{esc(saml_response)}"/>',
    ]
    if relay_state is not None:
        lines.append(f'<input type="hidden" name="RelayState" value="{esc(relay_state)}"/>')
    lines += [
        '<input type="submit" value="Continue"/>',
        "</form></body></html>",
        "",
    ]
    return "\n".join(lines).encode("utf-8")


def single_values(qs):
    """parse_qs result -> {name: value}; a repeated parameter is refused."""
    out = {}
    for key, values in qs.items():
        if len(values) != 1:
            raise BadRequest(f"parameter {key} repeated")
        out[key] = values[0]
    return out


def make_handler(idp):
    class Handler(BaseHTTPRequestHandler):
        server_version = "pysaml2-idp"

        def log_message(self, fmt, *a):
            LOG.info("%s %s", self.address_string(), fmt % a)

        def _send(self, status, body, ctype="text/plain; charset=utf-8", headers=()):
            if isinstance(body, str):
                body = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _dispatch(self, fn):
            try:
                fn()
            except BadRequest as exc:
                LOG.warning("400: %s", exc)
                self._send(400, f"400 Bad Request: {exc}\n")
            except Exception as exc:
                LOG.exception("internal error")
                self._send(500, f"500 Internal Server Error: {type(exc).__name__}\n")

        def do_GET(self):
            url = urlsplit(self.path)

            def run():
                params = single_values(parse_qs(url.query, keep_blank_values=True))
                if url.path == "/sso":
                    self._send(200, idp.sso(BINDING_HTTP_REDIRECT, params, url.query),
                               "text/html; charset=utf-8")
                elif url.path == "/slo":
                    self._send(302, "", headers=[("Location", idp.slo(params, url.query))])
                elif url.path == "/metadata":
                    self._send(200, idp.metadata, "application/samlmetadata+xml")
                elif url.path == "/health":
                    self._send(200, "ok\n")
                else:
                    self._send(404, "404 Not Found\n")

            self._dispatch(run)

        def do_POST(self):
            url = urlsplit(self.path)

            def run():
                length = int(self.headers.get("Content-Length") or 0)
                if length > 1024 * 1024:
                    raise BadRequest("request body too large")
                body = self.rfile.read(length).decode("utf-8", "replace")
                params = single_values(parse_qs(body, keep_blank_values=True))
                if url.path == "/sso":
                    self._send(200, idp.sso(BINDING_HTTP_POST, params), "text/html; charset=utf-8")
                else:
                    self._send(404, "404 Not Found\n")

            self._dispatch(run)

    return Handler


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:PORT")
    p.add_argument("--entity-id", required=True)
    p.add_argument("--cert", required=True, help="IdP signing certificate (PEM)")
    p.add_argument("--key", required=True, help="IdP signing key (PEM)")
    p.add_argument("--sp-metadata", required=True)
    p.add_argument("--metadata-out", required=True)
    p.add_argument("--profile", choices=("spid", "cie"), default="spid")
    p.add_argument("--fiscal-number", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--family-name", required=True)
    p.add_argument("--date-of-birth", required=True)
    p.add_argument("--sign-response", choices=("yes", "no"), default="yes",
                   help="also sign the Response (the Assertion is always signed)")
    p.add_argument("--verbose", action="store_true", help="pysaml2 debug logs")
    args = p.parse_args(argv)

    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="pysaml2_idp %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("saml2").setLevel(logging.WARNING)

    idp = Idp(args)
    tmp = args.metadata_out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(idp.metadata)
    os.replace(tmp, args.metadata_out)

    httpd = ThreadingHTTPServer((args.host, args.port), make_handler(idp))
    httpd.daemon_threads = True
    LOG.info("%s profile=%s listening on %s:%d", args.entity_id, args.profile, args.host, args.port)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
