import http from 'node:http';
import net from 'node:net';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/daemon.js';

let running: RunningServer | undefined;
let jwks: http.Server | undefined;
afterEach(async () => {
  await running?.close();
  jwks?.closeAllConnections();
  jwks?.close();
  running = undefined;
  jwks = undefined;
});

/**
 * Regression: a stream whose credential was still being verified (here a JWKS fetch) when
 * shutdown began was opened afterwards, never told `shutdown`, and cut at the close deadline.
 * The closing check runs again once the credential is verified.
 */
describe('a stream request whose credential is being verified when the daemon stops', () => {
  it('is refused or ended with event: close (shutdown), not left open and then cut', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = { ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    // A JWKS endpoint that answers after 500 ms (an identity provider across the network).
    let fetched!: () => void;
    const jwksFetched = new Promise<void>((resolve) => (fetched = resolve));
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    jwks = http.createServer((_req, res) => {
      fetched();
      void answered.then(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ keys: [jwk] }));
      });
    });
    await new Promise<void>((resolve) => jwks!.listen(0, '127.0.0.1', resolve));
    const jwksUrl = `http://127.0.0.1:${(jwks.address() as net.AddressInfo).port}/jwks.json`;

    running = await startServer({ host: '127.0.0.1', port: 0, httpPort: 0, http: {}, auth: { jwksUrl } });
    const token = await new SignJWT({ workspace_id: 1, role: 'workspace' })
      .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
      .setIssuedAt()
      .setExpirationTime('1h')
      .sign(privateKey);

    const socket = net.connect(running.httpPort!, '127.0.0.1');
    let text = '';
    let closedAt: number | undefined;
    socket.on('data', (chunk) => (text += chunk.toString()));
    socket.on('error', () => {});
    socket.on('close', () => (closedAt = Date.now()));
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write(`GET /events/sb-1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`);

    await jwksFetched; // the handler is past its "closing?" check, waiting for the key
    const stopping = running.close();
    answer(); // the key arrives after the shutdown began

    await stopping;
    running = undefined;
    await new Promise<void>((resolve) => (closedAt === undefined ? socket.once('close', () => resolve()) : resolve()));

    const status = /^HTTP\/1\.1 (\d{3})/.exec(text)?.[1];
    const outcome = {
      status,
      toldWhy: status === '503' || text.includes('event: close\ndata: {"reason":"shutdown"}'),
      closed: closedAt !== undefined,
    };
    socket.destroy();
    expect(outcome, `received: ${JSON.stringify(text)}`).toMatchObject({ toldWhy: true, closed: true });
  });
});
