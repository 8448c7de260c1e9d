// A loopback Sigstore for model-verifier's tests: Fulcio (with a CT log and embedded SCTs),
// Rekor v1 (SET, inclusion proof, checkpoint) and an RFC 3161 timestamp authority, all from
// @sigstore/mock (the sigstore-js project), behind one HTTP server on 127.0.0.1.
//
//   node server.js --out DIR [--port N]
//
// It writes DIR/trusted_root.json (for verification) and DIR/trust_config.json (a
// ClientTrustConfig for `record --sigstore --trust-config`), then prints one line
// `READY http://127.0.0.1:PORT` on stdout. Any JWT with iss, sub, aud "sigstore", iat and exp is
// accepted (no signature check, as in the mock); sub becomes the certificate's SAN, and GitHub
// claims (repository, ref, sha, event_name, workflow, ...) become certificate extensions.
//
// @sigstore/mock speaks what sigstore-js sends. sigstore-python sends four things differently,
// and this server translates them:
//   1. Fulcio: the CSR arrives as base64 of the PEM, the mock wants the PEM;
//   2. Fulcio: the OIDC token arrives in `Authorization: Bearer`, the mock reads it from the
//      body's credentials.oidcIdentityToken;
//   3. Rekor: a DSSE entry arrives as proposedContent (the envelope and a verifier), while a
//      real Rekor stores, and sigstore-python checks, the canonical form (envelope and payload
//      hashes, signatures with their verifiers);
//   4. Timestamps: the request arrives as a DER TimeStampReq, the mock wants JSON.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');

const mock = require('@sigstore/mock');
const asn1js = require('asn1js');
const pkijs = require('pkijs');

const FULCIO_PATH = '/api/v2/signingCert';
const REKOR_PATH = '/api/v1/log/entries';
const TSA_PATH = '/api/v1/timestamp';
const MAX_BODY = 4 * 1024 * 1024;

function parseArgs(argv) {
  const options = { port: 0, out: null };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === '--port') options.port = Number(argv[++i]);
    else if (argv[i] === '--out') options.out = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!options.out) throw new Error('--out DIR is required');
  return options;
}

const b64 = (buffer) => Buffer.from(buffer).toString('base64');
const sha256 = (data) => crypto.createHash('sha256').update(data).digest();
const spki = (keyPair) => keyPair.publicKey.export({ format: 'der', type: 'spki' });

// 1 + 2: the Fulcio request as sigstore-js would have sent it.
function translateFulcio(body, headers) {
  const request = JSON.parse(body);
  const bearer = /^Bearer\s+(.+)$/i.exec(headers.authorization || '');
  let csr = request.certificateSigningRequest;
  if (csr && !csr.includes('-----BEGIN')) csr = Buffer.from(csr, 'base64').toString('utf8');
  return JSON.stringify({
    ...request,
    certificateSigningRequest: csr,
    credentials: request.credentials || { oidcIdentityToken: bearer ? bearer[1] : '' },
  });
}

// 3: a DSSE entry in Rekor's canonical form.
function translateRekor(body) {
  const entry = JSON.parse(body);
  if (entry.kind !== 'dsse' || !entry.spec || !entry.spec.proposedContent) return body;
  const { envelope, verifiers } = entry.spec.proposedContent;
  const parsed = JSON.parse(envelope);
  return JSON.stringify({
    apiVersion: entry.apiVersion || '0.0.1',
    kind: 'dsse',
    spec: {
      envelopeHash: { algorithm: 'sha256', value: sha256(envelope).toString('hex') },
      payloadHash: {
        algorithm: 'sha256',
        value: sha256(Buffer.from(parsed.payload, 'base64')).toString('hex'),
      },
      signatures: parsed.signatures.map((signature) => ({
        signature: signature.sig,
        verifier: verifiers[0],
      })),
    },
  });
}

// 4: the DER TimeStampReq as the mock's JSON request.
function translateTimestamp(body) {
  const asn = asn1js.fromBER(new Uint8Array(body).buffer);
  if (asn.offset === -1) throw new Error('timestamp request is not DER');
  const request = new pkijs.TimeStampReq({ schema: asn.result });
  const algorithm = request.messageImprint.hashAlgorithm.algorithmId;
  const names = { '2.16.840.1.101.3.4.2.1': 'sha256', '2.16.840.1.101.3.4.2.2': 'sha384',
    '2.16.840.1.101.3.4.2.3': 'sha512' };
  return JSON.stringify({
    artifactHash: b64(request.messageImprint.hashedMessage.valueBlock.valueHexView),
    hashAlgorithm: names[algorithm] || 'sha256',
    // The mock encodes the nonce as a JS number; sigstore-python does not check it.
    nonce: request.nonce ? Number(request.nonce.valueBlock.valueDec) || 1 : undefined,
    certificates: Boolean(request.certReq),
  });
}

function trustDocuments(url, keys, ca, ctlog, tsa) {
  // Valid from a minute ago: the certificates the mock makes start "now".
  const validFor = { start: new Date(Date.now() - 60 * 1000).toISOString() };
  const publicKey = (der) => ({ rawBytes: b64(der), keyDetails: 'PKIX_ECDSA_P256_SHA_256',
    validFor });
  const trustedRoot = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [{ baseUrl: url, hashAlgorithm: 'SHA2_256', publicKey: publicKey(spki(keys.rekor)),
      logId: { keyId: b64(sha256(spki(keys.rekor))) } }],
    certificateAuthorities: [{
      subject: { organization: 'sigstore.mock', commonName: 'loopback fulcio' }, uri: url,
      certChain: { certificates: [{ rawBytes: b64(ca.rootCertificate) }] }, validFor,
    }],
    ctlogs: [{ baseUrl: url, hashAlgorithm: 'SHA2_256', publicKey: publicKey(ctlog.publicKey),
      logId: { keyId: b64(ctlog.logID) } }],
    timestampAuthorities: [{
      subject: { organization: 'sigstore.mock', commonName: 'loopback tsa' }, uri: url + TSA_PATH,
      certChain: { certificates: [{ rawBytes: b64(tsa.intCertificate) },
        { rawBytes: b64(tsa.rootCertificate) }] },
      validFor,
    }],
  };
  const service = (serviceUrl) => ({ url: serviceUrl, majorApiVersion: 1, validFor,
    operator: 'loopback' });
  const signingConfig = {
    mediaType: 'application/vnd.dev.sigstore.signingconfig.v0.2+json',
    caUrls: [service(url)],
    oidcUrls: [service(url + '/oidc')],
    rekorTlogUrls: [service(url)],
    tsaUrls: [service(url + TSA_PATH)],
    rekorTlogConfig: { selector: 'ANY' },
    tsaConfig: { selector: 'ANY' },
  };
  return {
    trustedRoot,
    trustConfig: {
      mediaType: 'application/vnd.dev.sigstore.clienttrustconfig.v0.1+json',
      trustedRoot,
      signingConfig,
    },
  };
}

function writeJson(file, value) {
  const temporary = `${file}.tmp`;
  fs.writeFileSync(temporary, JSON.stringify(value, null, 2) + '\n');
  fs.renameSync(temporary, file);
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  const keyPair = () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const keys = { ca: keyPair(), ct: keyPair(), rekor: keyPair(), tsa: keyPair() };

  const server = http.createServer();
  await new Promise((resolve) => server.listen(options.port, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;

  const ctlog = await mock.initializeCTLog(keys.ct);
  const ca = await mock.initializeCA(keys.ca, ctlog);
  const tlog = await mock.initializeTLog(url, keys.rekor);
  const tsa = await mock.initializeTSA(keys.tsa);
  const routes = {
    [FULCIO_PATH]: { handler: mock.fulcioHandler(ca), translate: translateFulcio },
    [REKOR_PATH]: { handler: mock.rekorHandler(tlog), translate: translateRekor },
    [TSA_PATH]: { handler: mock.tsaHandler(tsa), translate: translateTimestamp },
  };

  server.on('request', (request, response) => {
    const chunks = [];
    let size = 0;
    request.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) request.destroy();
      else chunks.push(chunk);
    });
    request.on('end', async () => {
      const route = request.method === 'POST' ? routes[request.url.split('?')[0]] : undefined;
      if (request.method === 'GET' && request.url === '/healthz') {
        response.writeHead(200, { 'Content-Type': 'text/plain' }).end('ok\n');
        return;
      }
      if (!route) {
        response.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
        return;
      }
      try {
        const body = Buffer.concat(chunks);
        const translated = route.translate(
          request.url === TSA_PATH ? body : body.toString('utf8'), request.headers);
        const { statusCode, response: payload, contentType } = await route.handler.fn(translated);
        response.writeHead(statusCode, { 'Content-Type': contentType || 'text/plain' });
        response.end(payload);
      } catch (error) {
        response.writeHead(400, { 'Content-Type': 'text/plain' }).end(`${error.message}\n`);
      }
    });
  });

  const { trustedRoot, trustConfig } = trustDocuments(url, keys, ca, ctlog, tsa);
  fs.mkdirSync(options.out, { recursive: true });
  writeJson(path.join(options.out, 'trusted_root.json'), trustedRoot);
  writeJson(path.join(options.out, 'trust_config.json'), trustConfig);
  process.stdout.write(`READY ${url}\n`);

  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => {
  process.stderr.write(`sigstore mock: ${error.stack || error}\n`);
  process.exit(1);
});
