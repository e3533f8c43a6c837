#!/usr/bin/env python3
"""Standalone check of tests/interop/pysaml2_idp.py, playing the SP side by hand.

Generates throwaway keys with openssl, writes an SPID-like SP metadata, starts the IdP
(both profiles), sends signed HTTP-Redirect AuthnRequests / LogoutRequests the way
varco's SP builds them, and checks the answers against the SPID rules. Needs openssl,
xmlsec1 and the packages of requirements.txt. Prints 'N passed, N failed'.

    python3 tests/interop/check_idp.py [--keep]
"""

import base64
import datetime as dt
import html.parser
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
import zlib

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.x509 import load_pem_x509_certificate

HERE = os.path.dirname(os.path.abspath(__file__))
IDP_SCRIPT = os.path.join(HERE, "pysaml2_idp.py")
if not os.path.exists(IDP_SCRIPT):
    IDP_SCRIPT = "/work/main/tests/interop/pysaml2_idp.py"

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "md": "urn:oasis:names:tc:SAML:2.0:metadata",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"
TRANSIENT = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
BASIC = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic"
SP_ID = "https://sp.test/"
ACS = "http://127.0.0.1:9/_varco/saml/acs"
SP_SLO = "http://127.0.0.1:9/_varco/saml/slo"
USER = {
    "fiscalNumber": "TINIT-RSSMRA80A01H501U",
    "name": "Mario",
    "familyName": "Rossi",
    "dateOfBirth": "1980-01-01",
}

RESULTS = {"passed": 0, "failed": 0}


def check(cond, what):
    if cond:
        RESULTS["passed"] += 1
        print(f"  ok   {what}")
    else:
        RESULTS["failed"] += 1
        print(f"  FAIL {what}")


def b64_cert(path):
    with open(path) as f:
        return "".join(l for l in f.read().splitlines() if not l.startswith("-----"))


def sp_metadata(cert_path):
    c = b64_cert(cert_path)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" xmlns:spid="https://spid.gov.it/saml-extensions" entityID="{SP_ID}" ID="_sp_md">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" AuthnRequestsSigned="true" WantAssertionsSigned="true">
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{SP_SLO}"/>
    <md:NameIDFormat>{TRANSIENT}</md:NameIDFormat>
    <md:AssertionConsumerService index="0" isDefault="true" Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{ACS}"/>
    <md:AttributeConsumingService index="0">
      <md:ServiceName xml:lang="it">varco</md:ServiceName>
      <md:RequestedAttribute Name="fiscalNumber" NameFormat="{BASIC}" isRequired="true"/>
      <md:RequestedAttribute Name="name" NameFormat="{BASIC}"/>
      <md:RequestedAttribute Name="familyName" NameFormat="{BASIC}"/>
      <md:RequestedAttribute Name="dateOfBirth" NameFormat="{BASIC}"/>
    </md:AttributeConsumingService>
  </md:SPSSODescriptor>
  <md:Organization>
    <md:OrganizationName xml:lang="it">Ente di prova</md:OrganizationName>
    <md:OrganizationDisplayName xml:lang="it">Ente di prova</md:OrganizationDisplayName>
    <md:OrganizationURL xml:lang="it">https://sp.test/</md:OrganizationURL>
  </md:Organization>
  <md:ContactPerson contactType="other">
    <md:Extensions><spid:IPACode>x</spid:IPACode><spid:Public/></md:Extensions>
    <md:EmailAddress>spid@sp.test</md:EmailAddress>
  </md:ContactPerson>
</md:EntityDescriptor>
"""


def varco_sp_metadata(cert_path, key_path, profile, workdir):
    """The shape src/saml/sp_metadata.rs writes: signed EntityDescriptor, extension
    namespace declared on the root, several AttributeConsumingService (SPID) and the
    SPID/CIE ContactPerson extensions."""
    c = b64_cert(cert_path)
    ext_ns, pfx = (("https://www.cartaidentita.interno.gov.it/saml-extensions", "cie") if profile == "cie"
                   else ("https://spid.gov.it/saml-extensions", "spid"))
    sets = [["name", "familyName", "dateOfBirth", "fiscalNumber"]] if profile == "cie" else [
        ["fiscalNumber", "name"], ["fiscalNumber", "name", "familyName", "dateOfBirth"]]
    acss = "".join(
        f'<md:AttributeConsumingService index="{i}"><md:ServiceName xml:lang="it">Servizi</md:ServiceName>'
        + "".join(f'<md:RequestedAttribute Name="{a}" NameFormat="{BASIC}"/>' for a in names)
        + "</md:AttributeConsumingService>" for i, names in enumerate(sets))
    if profile == "cie":
        contact = (f'<md:ContactPerson contactType="administrative"><md:Extensions><cie:IPACode>c_h501</cie:IPACode>'
                   '<cie:Municipality>H501</cie:Municipality><cie:Public/></md:Extensions>'
                   '<md:EmailAddress>spid@sp.test</md:EmailAddress><md:TelephoneNumber>+390612345678'
                   '</md:TelephoneNumber></md:ContactPerson>')
    else:
        contact = ('<md:ContactPerson contactType="other"><md:Extensions><spid:VATNumber>IT12345678901'
                   '</spid:VATNumber><spid:Private/></md:Extensions><md:EmailAddress>spid@sp.test</md:EmailAddress>'
                   '<md:TelephoneNumber>+390612345678</md:TelephoneNumber></md:ContactPerson>'
                   '<md:ContactPerson contactType="billing"><md:Company>Ente &amp; Co</md:Company>'
                   '<md:EmailAddress>spid@sp.test</md:EmailAddress><md:TelephoneNumber>+390612345678'
                   '</md:TelephoneNumber></md:ContactPerson>')
    sig = (
        '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
        f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/><ds:SignatureMethod Algorithm="{RSA_SHA256}"/>'
        '<ds:Reference URI="#_md1"><ds:Transforms>'
        '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
        f'<ds:Transform Algorithm="{EXC_C14N}"/></ds:Transforms><ds:DigestMethod Algorithm="{SHA256}"/>'
        '<ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/>'
        f'<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{c}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>'
        '</ds:Signature>')
    xml = (
        f'<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:{pfx}="{ext_ns}" '
        f'entityID="{SP_ID}" ID="_md1">{sig}'
        '<md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" '
        'AuthnRequestsSigned="true" WantAssertionsSigned="true">'
        '<md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#">'
        f'<ds:X509Data><ds:X509Certificate>{c}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>'
        f'<md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{SP_SLO}"/>'
        f'<md:NameIDFormat>{TRANSIENT}</md:NameIDFormat>'
        '<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" '
        f'Location="{ACS}" index="0" isDefault="true"/>{acss}</md:SPSSODescriptor>'
        '<md:Organization><md:OrganizationName xml:lang="it">Ente &lt;Test&gt; &amp; Co</md:OrganizationName>'
        '<md:OrganizationDisplayName xml:lang="it">Ente</md:OrganizationDisplayName>'
        '<md:OrganizationURL xml:lang="it">https://sp.test/</md:OrganizationURL></md:Organization>'
        f'{contact}</md:EntityDescriptor>')
    path = os.path.join(workdir, f"varco-sp-{profile}.xml")
    with open(path, "w") as f:
        f.write(xml)
    out = subprocess.run(
        ["xmlsec1", "--sign", "--privkey-pem", key_path, "--id-attr:ID",
         "urn:oasis:names:tc:SAML:2.0:metadata:EntityDescriptor", path],
        capture_output=True, check=True)
    with open(path, "wb") as f:
        f.write(out.stdout)
    return path, sets


def now_z(delta=0):
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delta)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def authn_request(dest, req_id, level="https://www.spid.gov.it/SpidL2", attr_index=0):
    return (
        '<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="{req_id}" Version="2.0" IssueInstant="{now_z()}" Destination="{dest}" '
        'ForceAuthn="true" AssertionConsumerServiceIndex="0" '
        f'AttributeConsumingServiceIndex="{attr_index}">'
        f'<saml:Issuer Format="{ENTITY}" NameQualifier="{SP_ID}">{SP_ID}</saml:Issuer>'
        f'<samlp:NameIDPolicy Format="{TRANSIENT}"/>'
        '<samlp:RequestedAuthnContext Comparison="minimum">'
        f"<saml:AuthnContextClassRef>{level}</saml:AuthnContextClassRef>"
        "</samlp:RequestedAuthnContext></samlp:AuthnRequest>"
    )


def logout_request(dest, req_id, idp_id):
    return (
        '<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
        'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" '
        f'ID="{req_id}" Version="2.0" IssueInstant="{now_z()}" Destination="{dest}">'
        f'<saml:Issuer Format="{ENTITY}" NameQualifier="{SP_ID}">{SP_ID}</saml:Issuer>'
        f'<saml:NameID Format="{TRANSIENT}" NameQualifier="{idp_id}">_abc</saml:NameID>'
        "<samlp:SessionIndex>_s1</samlp:SessionIndex></samlp:LogoutRequest>"
    )


def enc(s):
    # As varco's SP: percent-encode everything but ALPHA / DIGIT / - . _ ~
    return urllib.parse.quote(s, safe="-._~")


def deflate_b64(xml):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return base64.b64encode(c.compress(xml.encode()) + c.flush()).decode()


def signed_query(xml, relay_state, key, param="SAMLRequest"):
    q = f"{param}={enc(deflate_b64(xml))}"
    if relay_state is not None:
        q += f"&RelayState={enc(relay_state)}"
    q += f"&SigAlg={enc(RSA_SHA256)}"
    sig = key.sign(q.encode(), padding.PKCS1v15(), hashes.SHA256())
    return q, q + f"&Signature={enc(base64.b64encode(sig).decode())}"


def get(url):
    req = urllib.request.Request(url)
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def post(url, body):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def xmlsec_sign_request(xml, workdir):
    tmpl = (
        '<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo>'
        f'<ds:CanonicalizationMethod Algorithm="{EXC_C14N}"/>'
        f'<ds:SignatureMethod Algorithm="{RSA_SHA256}"/>'
        '<ds:Reference URI="#{id}"><ds:Transforms>'
        '<ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>'
        f'<ds:Transform Algorithm="{EXC_C14N}"/></ds:Transforms>'
        f'<ds:DigestMethod Algorithm="{SHA256}"/><ds:DigestValue/></ds:Reference>'
        '</ds:SignedInfo><ds:SignatureValue/></ds:Signature>'
    )
    req_id = xml.split('ID="', 1)[1].split('"', 1)[0]
    xml = xml.replace("</saml:Issuer>", "</saml:Issuer>" + tmpl.replace("{id}", req_id), 1)
    path = os.path.join(workdir, "req.xml")
    with open(path, "w") as f:
        f.write(xml)
    out = subprocess.run(
        ["xmlsec1", "--sign", "--privkey-pem", os.path.join(workdir, "sp.key.pem"),
         "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest", path],
        capture_output=True, check=True)
    return out.stdout


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


class FormParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms = []
        self.inputs = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.forms.append(a)
        elif tag == "input" and "name" in a:
            self.inputs[a["name"]] = a.get("value")


def parse_time(s):
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def xmlsec_verify(xml_bytes, cert, id_attr, workdir):
    """xmlsec1 --verify of the Signature child of the element named by id_attr.

    Without --node-xpath xmlsec1 checks the first Signature of the document, which is
    the Response's when the Response is signed too."""
    path = os.path.join(workdir, "resp.xml")
    with open(path, "wb") as f:
        f.write(xml_bytes)
    local = id_attr.rsplit(":", 1)[1]
    xpath = f"//*[local-name()='{local}']/*[local-name()='Signature']"
    p = subprocess.run(
        ["xmlsec1", "--verify", "--pubkey-cert-pem", cert, "--id-attr:ID", id_attr,
         "--node-xpath", xpath, path],
        capture_output=True,
        text=True,
    )
    return p.returncode == 0, p.stderr.strip()


def check_signature_shape(sig, ref_id, what):
    check(sig is not None, f"{what} has a ds:Signature")
    if sig is None:
        return
    si = sig.find("ds:SignedInfo", NS)
    check(si.find("ds:CanonicalizationMethod", NS).get("Algorithm") == EXC_C14N, f"{what}: exclusive c14n")
    check(si.find("ds:SignatureMethod", NS).get("Algorithm") == RSA_SHA256, f"{what}: RSA-SHA256")
    ref = si.find("ds:Reference", NS)
    check(ref.get("URI") == f"#{ref_id}", f"{what}: Reference URI = #ID")
    check(ref.find("ds:DigestMethod", NS).get("Algorithm") == SHA256, f"{what}: SHA-256 digest")
    algs = [t.get("Algorithm") for t in ref.findall("ds:Transforms/ds:Transform", NS)]
    check("http://www.w3.org/2000/09/xmldsig#enveloped-signature" in algs, f"{what}: enveloped")


def check_response(xml, profile, req_id, idp_id, level, idp_cert, workdir):
    root = ET.fromstring(xml)
    t0 = dt.datetime.now(dt.timezone.utc)
    check(root.tag == f"{{{NS['samlp']}}}Response", "root is samlp:Response")
    check(root.get("Destination") == ACS, "Response Destination = ACS")
    check(root.get("InResponseTo") == req_id, "Response InResponseTo = request ID")
    check(root.get("Version") == "2.0", "Response Version 2.0")
    check(root.get("IssueInstant", "").endswith("Z"), "Response IssueInstant in UTC Z")
    iss = root.find("saml:Issuer", NS)
    check(iss is not None and iss.text == idp_id and iss.get("Format") == ENTITY,
          "Response Issuer = IdP, Format entity")
    st = root.find("samlp:Status/samlp:StatusCode", NS)
    check(st is not None and st.get("Value") == "urn:oasis:names:tc:SAML:2.0:status:Success", "Status Success")
    assertions = root.findall("saml:Assertion", NS)
    check(len(assertions) == 1, "exactly one Assertion")
    check(not root.findall("saml:EncryptedAssertion", NS), "no EncryptedAssertion")
    a = assertions[0]
    check_signature_shape(a.find("ds:Signature", NS), a.get("ID"), "Assertion")
    rsig = root.find("ds:Signature", NS)
    if rsig is not None:
        check_signature_shape(rsig, root.get("ID"), "Response")
    check(a.get("IssueInstant", "").endswith("Z"), "Assertion IssueInstant in UTC Z")
    aiss = a.find("saml:Issuer", NS)
    check(aiss is not None and aiss.text == idp_id, "Assertion Issuer = IdP")
    if profile == "spid":
        check(aiss.get("Format") == ENTITY, "SPID: Assertion Issuer Format entity")
    else:
        check(aiss.get("Format") is None, "CIE: Assertion Issuer without Format")
    nid = a.find("saml:Subject/saml:NameID", NS)
    check(nid is not None and nid.get("Format") == TRANSIENT, "NameID transient")
    check(nid is not None and nid.get("NameQualifier") == idp_id, "NameID NameQualifier = IdP")
    sc = a.find("saml:Subject/saml:SubjectConfirmation", NS)
    check(sc is not None and sc.get("Method") == "urn:oasis:names:tc:SAML:2.0:cm:bearer", "bearer")
    scd = sc.find("saml:SubjectConfirmationData", NS)
    check(scd.get("Recipient") == ACS, "SubjectConfirmationData Recipient = ACS")
    check(scd.get("InResponseTo") == req_id, "SubjectConfirmationData InResponseTo")
    noa = parse_time(scd.get("NotOnOrAfter"))
    check(dt.timedelta(minutes=3) < noa - t0 <= dt.timedelta(minutes=6), f"SCD NotOnOrAfter ~5 min ({noa - t0})")
    cond = a.find("saml:Conditions", NS)
    nb = parse_time(cond.get("NotBefore"))
    check(dt.timedelta(seconds=-30) < nb - t0 <= dt.timedelta(seconds=1), "Conditions NotBefore ~ now")
    cnoa = parse_time(cond.get("NotOnOrAfter"))
    check(dt.timedelta(minutes=3) < cnoa - t0 <= dt.timedelta(minutes=6), "Conditions NotOnOrAfter ~5 min")
    aud = cond.findall("saml:AudienceRestriction/saml:Audience", NS)
    check([x.text for x in aud] == [SP_ID], "Audience = SP entityID")
    acr = a.findall("saml:AuthnStatement/saml:AuthnContext/saml:AuthnContextClassRef", NS)
    check([x.text for x in acr] == [level], f"AuthnContextClassRef = {level}")
    attrs = a.findall("saml:AttributeStatement/saml:Attribute", NS)
    got = {x.get("Name"): [v.text for v in x.findall("saml:AttributeValue", NS)] for x in attrs}
    check(got == {k: [v] for k, v in USER.items()}, f"attributes {got}")
    check(all(x.get("NameFormat") == BASIC for x in attrs), "attributes NameFormat basic")
    # Every time stamp in UTC with Z.
    stamps = [el.get(k) for el in root.iter() for k in ("IssueInstant", "NotBefore", "NotOnOrAfter",
                                                        "AuthnInstant") if el.get(k)]
    check(all(s.endswith("Z") for s in stamps), "all instants end in Z")
    ok, err = xmlsec_verify(xml, idp_cert, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion", workdir)
    check(ok, "xmlsec1 verifies the Assertion signature" + ("" if ok else f": {err}"))
    if rsig is not None:
        ok, err = xmlsec_verify(xml, idp_cert, "urn:oasis:names:tc:SAML:2.0:protocol:Response", workdir)
        check(ok, "xmlsec1 verifies the Response signature" + ("" if ok else f": {err}"))
    # Tampering the signed assertion must break its signature.
    bad = xml.replace(USER["fiscalNumber"].encode(), b"TINIT-XXXXXX80A01H501U")
    ok, _ = xmlsec_verify(bad, idp_cert, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion", workdir)
    check(not ok, "xmlsec1 rejects a tampered Assertion")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_idp(profile, workdir, idp_cert, sp_md, tag):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp_id = f"{base}/idp"
    md_out = os.path.join(workdir, f"idp-{tag}.xml")
    cmd = [
        sys.executable, IDP_SCRIPT, "--port", str(port), "--base-url", base, "--entity-id", idp_id,
        "--cert", idp_cert, "--key", os.path.join(workdir, "idp.key.pem"),
        "--sp-metadata", sp_md, "--metadata-out", md_out,
        "--profile", profile, "--fiscal-number", USER["fiscalNumber"], "--name", USER["name"],
        "--family-name", USER["familyName"], "--date-of-birth", USER["dateOfBirth"],
    ]
    log = open(os.path.join(workdir, f"idp-{tag}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    line = proc.stdout.readline()
    check(line == "ready\n", f"IdP ({tag}) prints 'ready'")
    return proc, log, base, idp_id, line == "ready\n"


def run_varco_metadata(profile, workdir, sp_key, idp_cert):
    print(f"== varco-shaped signed SP metadata, profile {profile}")
    sp_md, sets = varco_sp_metadata(os.path.join(workdir, "sp.crt.pem"), os.path.join(workdir, "sp.key.pem"),
                                    profile, workdir)
    proc, log, base, idp_id, ok = start_idp(profile, workdir, idp_cert, sp_md, f"varco-{profile}")
    try:
        if not ok:
            return
        for i, names in enumerate(sets):
            req_id = "_" + secrets.token_hex(16)
            _, q = signed_query(authn_request(f"{base}/sso", req_id, attr_index=i), "r", sp_key)
            status, _, body = get(f"{base}/sso?{q}")
            check(status == 200, f"AttributeConsumingServiceIndex {i} -> 200")
            if status != 200:
                print(body)
                continue
            fp = FormParser()
            fp.feed(body)
            root = ET.fromstring(base64.b64decode(fp.inputs["SAMLResponse"]))
            got = sorted(a.get("Name") for a in root.iterfind(".//saml:Attribute", NS))
            check(got == sorted(names), f"index {i} releases exactly {sorted(names)} (got {got})")
        _, q = signed_query(authn_request(f"{base}/sso", "_" + secrets.token_hex(8), attr_index=7), "r", sp_key)
        check(get(f"{base}/sso?{q}")[0] == 400, "unknown AttributeConsumingServiceIndex -> 400")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def run_profile(profile, workdir, sp_key, idp_cert):
    print(f"== profile {profile}")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    idp_id = f"{base}/idp"
    md_out = os.path.join(workdir, f"idp-{profile}.xml")
    cmd = [
        sys.executable, IDP_SCRIPT, "--port", str(port), "--base-url", base, "--entity-id", idp_id,
        "--cert", idp_cert, "--key", os.path.join(workdir, "idp.key.pem"),
        "--sp-metadata", os.path.join(workdir, "sp-metadata.xml"), "--metadata-out", md_out,
        "--profile", profile, "--fiscal-number", USER["fiscalNumber"], "--name", USER["name"],
        "--family-name", USER["familyName"], "--date-of-birth", USER["dateOfBirth"],
    ]
    log = open(os.path.join(workdir, f"idp-{profile}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = proc.stdout.readline()
        check(line == "ready\n", "IdP prints 'ready'")
        if line != "ready\n":
            return
        # -- metadata
        md = ET.parse(md_out).getroot()
        check(md.get("entityID") == idp_id, "metadata entityID")
        idpsso = md.find("md:IDPSSODescriptor", NS)
        kd = idpsso.find("md:KeyDescriptor", NS)
        check(kd is not None and kd.get("use") == "signing"
              and kd.find(".//ds:X509Certificate", NS).text.strip() == b64_cert(idp_cert),
              "metadata KeyDescriptor signing = cert")
        sso = {s.get("Binding").rsplit(":", 1)[1]: s.get("Location")
               for s in idpsso.findall("md:SingleSignOnService", NS)}
        check(sso == {"HTTP-Redirect": f"{base}/sso", "HTTP-POST": f"{base}/sso"}, f"metadata SSO {sso}")
        check(md.find("md:Extensions", NS) is None, "metadata without pysaml2's algsupport Extensions")
        slo = [(s.get("Binding"), s.get("Location")) for s in idpsso.findall("md:SingleLogoutService", NS)]
        check(slo == [("urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect", f"{base}/slo")], "metadata SLO")
        status, _, body = get(f"{base}/metadata")
        with open(md_out) as f:
            check(status == 200 and body == f.read(), "GET /metadata = written metadata")

        # -- SSO (HTTP-Redirect), one per level
        for level in ("https://www.spid.gov.it/SpidL1", "https://www.spid.gov.it/SpidL2",
                      "https://www.spid.gov.it/SpidL3"):
            req_id = "_" + secrets.token_hex(16)
            relay = "rs/" + secrets.token_urlsafe(12) + "&<\"'x=%"
            _, q = signed_query(authn_request(f"{base}/sso", req_id, level), relay, sp_key)
            status, headers, body = get(f"{base}/sso?{q}")
            check(status == 200, f"signed AuthnRequest ({level.rsplit('/', 1)[1]}) -> 200")
            if status != 200:
                print(body)
                continue
            check(headers.get("Content-Type", "").startswith("text/html"), "text/html")
            fp = FormParser()
            fp.feed(body)
            check(len(fp.forms) == 1 and fp.forms[0].get("method") == "post"
                  and fp.forms[0].get("action") == ACS, "one POST form to the ACS")
            check(fp.inputs.get("RelayState") == relay, "RelayState echoed exactly (HTML-escaped)")
            check(f'action="{ACS}"' in body and 'name="SAMLResponse" value="' in body
                  and 'name="RelayState" value="' in body, "form attributes double-quoted as documented")
            xml = base64.b64decode(fp.inputs["SAMLResponse"])
            with open(os.path.join(workdir, f"response-{profile}.xml"), "wb") as f:
                f.write(xml)
            check_response(xml, profile, req_id, idp_id, level, idp_cert, workdir)

        # -- no RelayState at all: no RelayState input
        req_id = "_" + secrets.token_hex(16)
        _, q = signed_query(authn_request(f"{base}/sso", req_id), None, sp_key)
        status, _, body = get(f"{base}/sso?{q}")
        check(status == 200 and 'name="RelayState"' not in body, "no RelayState -> no RelayState input")

        # -- pysaml2 quirk: it verifies over urlencode()d values, not the raw octets
        req_id = "_" + secrets.token_hex(16)
        xml = authn_request(f"{base}/sso", req_id)
        _, q = signed_query(xml, "a b", sp_key)  # space sent as %20 (as varco does)
        check(get(f"{base}/sso?{q}")[0] == 400, "pysaml2 quirk: RelayState with %20 -> 400")
        q = (f"SAMLRequest={enc(deflate_b64(xml))}&RelayState=a+b&SigAlg={enc(RSA_SHA256)}")
        sig = sp_key.sign(q.encode(), padding.PKCS1v15(), hashes.SHA256())
        q += f"&Signature={enc(base64.b64encode(sig).decode())}"
        status, _, body = get(f"{base}/sso?{q}")
        check(status == 200 and 'name="RelayState" value="a b"' in body, "RelayState with '+' -> 200")

        # -- SSO (HTTP-POST binding, enveloped signature)
        req_id = "_" + secrets.token_hex(16)
        signed_xml = xmlsec_sign_request(authn_request(f"{base}/sso", req_id), workdir)
        body = urllib.parse.urlencode({"SAMLRequest": base64.b64encode(signed_xml).decode(),
                                       "RelayState": "post-rs"}).encode()
        status, _, page = post(f"{base}/sso", body)
        check(status == 200 and 'name="RelayState" value="post-rs"' in page, "POST-binding signed request -> 200")
        unsigned = urllib.parse.urlencode({"SAMLRequest": base64.b64encode(
            authn_request(f"{base}/sso", req_id).encode()).decode()}).encode()
        check(post(f"{base}/sso", unsigned)[0] == 400, "POST-binding unsigned request -> 400")

        # -- refusals
        req_id = "_" + secrets.token_hex(16)
        xml = authn_request(f"{base}/sso", req_id)
        unsigned = f"SAMLRequest={enc(deflate_b64(xml))}&RelayState=x"
        check(get(f"{base}/sso?{unsigned}")[0] == 400, "unsigned AuthnRequest -> 400")
        _, q = signed_query(xml, "x", sp_key)
        tampered = q.replace("RelayState=x", "RelayState=y")
        check(get(f"{base}/sso?{tampered}")[0] == 400, "tampered RelayState -> 400")
        other = serialization.load_pem_private_key(
            open(os.path.join(workdir, "idp.key.pem"), "rb").read(), None)
        _, q = signed_query(xml, "x", other)
        check(get(f"{base}/sso?{q}")[0] == 400, "signed with a key not in SP metadata -> 400")
        _, q_orig = signed_query(xml, "x", sp_key)
        swapped = f"SAMLRequest={enc(deflate_b64(xml.replace('SpidL2', 'SpidL3')))}&" + q_orig.split("&", 1)[1]
        check(get(f"{base}/sso?{swapped}")[0] == 400, "tampered SAMLRequest -> 400")
        nosig = "&".join(p for p in q_orig.split("&") if not p.startswith("Signature="))
        check(get(f"{base}/sso?{nosig}")[0] == 400, "SigAlg without Signature -> 400")
        wrong_dest = authn_request("http://127.0.0.1:1/sso", "_" + secrets.token_hex(8))
        _, q = signed_query(wrong_dest, "x", sp_key)
        check(get(f"{base}/sso?{q}")[0] == 400, "wrong Destination -> 400")

        # -- SLO
        lr_id = "_" + secrets.token_hex(16)
        _, q = signed_query(logout_request(f"{base}/slo", lr_id, idp_id), "slo-rs", sp_key)
        status, headers, _ = get(f"{base}/slo?{q}")
        check(status == 302, "signed LogoutRequest -> 302")
        loc = headers.get("Location", "")
        check(loc.startswith(SP_SLO + "?"), "redirect to the SP's SingleLogoutService")
        raw = loc.split("?", 1)[1]
        parts = dict(p.split("=", 1) for p in raw.split("&"))
        signed = raw.split("&Signature=", 1)[0]
        check(urllib.parse.unquote(parts.get("SigAlg", "")) == RSA_SHA256, "LogoutResponse SigAlg RSA-SHA256")
        check(urllib.parse.unquote_plus(parts.get("RelayState", "")) == "slo-rs", "SLO RelayState echoed")
        pub = load_pem_x509_certificate(open(idp_cert, "rb").read()).public_key()
        try:
            pub.verify(base64.b64decode(urllib.parse.unquote(parts["Signature"])), signed.encode(),
                       padding.PKCS1v15(), hashes.SHA256())
            ok = True
        except Exception:
            ok = False
        check(ok, "LogoutResponse query signature verifies over the raw octets")
        lr = zlib.decompress(base64.b64decode(urllib.parse.unquote(parts["SAMLResponse"])), -15)
        lroot = ET.fromstring(lr)
        check(lroot.tag == f"{{{NS['samlp']}}}LogoutResponse", "LogoutResponse")
        check(lroot.get("InResponseTo") == lr_id, "LogoutResponse InResponseTo")
        check(lroot.get("Destination") == SP_SLO, "LogoutResponse Destination")
        li = lroot.find("saml:Issuer", NS)
        check(li is not None and li.text == idp_id and li.get("Format") == ENTITY, "LogoutResponse Issuer")
        check(lroot.find("samlp:Status/samlp:StatusCode", NS).get("Value")
              == "urn:oasis:names:tc:SAML:2.0:status:Success", "LogoutResponse Success")
        unsigned = f"SAMLRequest={enc(deflate_b64(logout_request(f'{base}/slo', lr_id, idp_id)))}"
        check(get(f"{base}/slo?{unsigned}")[0] == 400, "unsigned LogoutRequest -> 400")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def main():
    workdir = tempfile.mkdtemp(prefix="pysaml2-idp-check-")
    for n in ("idp", "sp"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
             os.path.join(workdir, f"{n}.key.pem"), "-out", os.path.join(workdir, f"{n}.crt.pem"),
             "-days", "30", "-subj", f"/CN={n}.test/O=Test/C=IT"],
            check=True, capture_output=True)
    with open(os.path.join(workdir, "sp-metadata.xml"), "w") as f:
        f.write(sp_metadata(os.path.join(workdir, "sp.crt.pem")))
    sp_key = serialization.load_pem_private_key(open(os.path.join(workdir, "sp.key.pem"), "rb").read(), None)
    idp_cert = os.path.join(workdir, "idp.crt.pem")
    for profile in ("spid", "cie"):
        run_profile(profile, workdir, sp_key, idp_cert)
        run_varco_metadata(profile, workdir, sp_key, idp_cert)
    if RESULTS["failed"] or "--keep" in sys.argv:
        print(f"(work files and IdP logs in {workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{RESULTS['passed']} passed, {RESULTS['failed']} failed")
    return 1 if RESULTS["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
