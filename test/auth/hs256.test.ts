import { createHmac } from 'node:crypto';
import fc from 'fast-check';
import { jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { type Hs256Checks, verifyHs256 } from '../../src/auth/hs256.js';

const SECRET = new TextEncoder().encode('hs256-property-secret-3f9a0c');
/** A second configured secret (rotation): it verifies nothing here, SECRET does. */
const OTHER_SECRET = new TextEncoder().encode('another-secret');
const WRONG_SECRET = new TextEncoder().encode('not-a-configured-secret');
const NOW = 1_800_000_000;
const TOLERANCE = 5;

const b64 = (text: string): string => Buffer.from(text).toString('base64url');

function signed(headerText: string, payloadText: string | Buffer, secret: Uint8Array = SECRET): string {
  const payload = typeof payloadText === 'string' ? b64(payloadText) : payloadText.toString('base64url');
  const input = `${b64(headerText)}.${payload}`;
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`;
}

/** jose's verdict, with the same options the verifier gives it. */
async function viaJose(token: string, checks: Hs256Checks): Promise<unknown> {
  try {
    const { payload } = await jwtVerify(token, SECRET, {
      algorithms: [...checks.algorithms],
      clockTolerance: checks.clockToleranceSeconds,
      requiredClaims: ['exp'],
      currentDate: new Date(NOW * 1000),
      ...(checks.issuer !== undefined ? { issuer: checks.issuer } : {}),
      ...(checks.audience !== undefined ? { audience: checks.audience } : {}),
    });
    return payload;
  } catch {
    return undefined;
  }
}

/** Both paths accept the token with the same claims, or both refuse it. */
async function expectSameVerdict(token: string, checks: Hs256Checks): Promise<void> {
  const jose = await viaJose(token, checks);
  const sync = verifyHs256(token, [OTHER_SECRET, SECRET], checks, NOW);
  expect(sync).toEqual(jose);
}

const timeAround = fc.oneof(
  fc.integer({ min: NOW - 2 * TOLERANCE, max: NOW + 2 * TOLERANCE }),
  fc.integer({ min: 0, max: 2 * NOW }),
  fc.double({ min: NOW - 10, max: NOW + 10, noNaN: true }),
  fc.constantFrom(null, '1800000000', true, [], {}),
);
const claimSets = fc.record(
  {
    exp: timeAround,
    nbf: timeAround,
    iat: timeAround,
    iss: fc.oneof(fc.constantFrom('issuer', 'Issuer', ''), fc.constant(null), fc.integer()),
    aud: fc.oneof(
      fc.constantFrom('aud', 'other'),
      fc.array(fc.constantFrom('aud', 'other', 'x'), { maxLength: 3 }),
      fc.constant(null),
      fc.array(fc.integer(), { maxLength: 2 }),
    ),
    workspace_id: fc.integer({ min: 1, max: 9 }),
    sub: fc.string({ maxLength: 4 }),
  },
  { requiredKeys: [] },
);
const headers = fc.oneof(
  fc.constantFrom(
    { alg: 'HS256' },
    { alg: 'HS256', typ: 'JWT' },
    { alg: 'none' },
    { alg: 'HS384' },
    { alg: 'HS512' },
    { alg: 'RS256' },
    { alg: 'hs256' },
    { alg: '' },
    {},
    { alg: 'HS256', crit: ['b64'], b64: true },
    { alg: 'HS256', crit: ['exp'] },
    { alg: 'HS256', crit: ['b64', 'b64'], b64: true },
    { alg: 'HS256', crit: ['b64'], b64: false },
    { alg: 'HS256', crit: ['b64'] },
    { alg: 'HS256', crit: [] },
    { alg: 'HS256', crit: 'b64', b64: true },
    { alg: 'HS256', b64: false },
    { alg: 'HS256', b64: 'yes' },
    { alg: 'HS256', kid: 'k1' },
  ),
);
const checkSets: fc.Arbitrary<Hs256Checks> = fc.record({
  algorithms: fc.constantFrom(['HS256'], ['HS256', 'HS512'], ['HS512']),
  issuer: fc.constantFrom(undefined, 'issuer'),
  audience: fc.constantFrom(undefined, 'aud'),
  clockToleranceSeconds: fc.constantFrom(0, TOLERANCE),
});

/** A token with one edit: a character of one part changed, removed or added, or a part swapped. */
function tampered(token: string, position: number, char: string, edit: number): string {
  const i = position % token.length;
  switch (edit % 5) {
    case 0:
      return token.slice(0, i) + char + token.slice(i + 1);
    case 1:
      return token.slice(0, i) + token.slice(i + 1);
    case 2:
      return token.slice(0, i) + char + token.slice(i);
    case 3: {
      // The signature's last character with other low bits: base64url that is not canonical.
      const last = token.at(-1)!;
      const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
      return token.slice(0, -1) + alphabet[(alphabet.indexOf(last) + 1 + (position % 3)) % 64];
    }
    default:
      return `${token}${char}`;
  }
}

describe('HS256 verified with node:crypto: the same verdict as jose', () => {
  it('accepts and refuses the same signed claims, headers and checks', async () => {
    await fc.assert(
      fc.asyncProperty(headers, claimSets, checkSets, fc.boolean(), async (header, claims, checks, rightKey) => {
        const token = signed(JSON.stringify(header), JSON.stringify(claims), rightKey ? SECRET : WRONG_SECRET);
        await expectSameVerdict(token, checks);
      }),
      { numRuns: 1_500 },
    );
  });

  it('refuses what jose refuses after any edit of a valid token', async () => {
    const valid = signed('{"alg":"HS256","typ":"JWT"}', JSON.stringify({ exp: NOW + 60, workspace_id: 1 }));
    const checks: Hs256Checks = { algorithms: ['HS256'], clockToleranceSeconds: TOLERANCE };
    await fc.assert(
      fc.asyncProperty(
        fc.nat(),
        fc.constantFrom('.', '=', '+', '/', 'A', '_', '-', ' ', 'é', '%'),
        fc.nat(),
        async (position, char, edit) => expectSameVerdict(tampered(valid, position, char, edit), checks),
      ),
      { numRuns: 1_500 },
    );
  });

  it('agrees on hand-made edge cases', async () => {
    const checks: Hs256Checks = { algorithms: ['HS256'], issuer: 'issuer', audience: 'aud', clockToleranceSeconds: 5 };
    const claims = (extra: object) => JSON.stringify({ iss: 'issuer', aud: 'aud', ...extra });
    const cases = [
      signed('{"alg":"HS256"}', claims({ exp: NOW - 5 })), // exactly at the tolerance: expired
      signed('{"alg":"HS256"}', claims({ exp: NOW - 4 })),
      signed('{"alg":"HS256"}', claims({ exp: NOW + 1, nbf: NOW + 5 })),
      signed('{"alg":"HS256"}', claims({ exp: NOW + 1, nbf: NOW + 6 })),
      signed('{"alg":"HS256"}', claims({})), // no exp
      signed('{"alg":"HS256"}', '[1]'),
      signed('{"alg":"HS256"}', 'not json'),
      signed('{"alg":"HS256"}', `{"exp":${NOW + 9},"iss":"issuer","aud":"aud","x":"\udc00"}`),
      signed('{"alg":"HS256"}', `{"exp":${NOW + 9},"iss":"issuer","aud":"aud","x":"\ufffd"}`),
      signed('{"alg":"HS256"}', `\ufeff${claims({ exp: NOW + 9 })}`), // a BOM, which the decoders drop
      signed('{"alg":"HS256"}', `${claims({ exp: NOW + 9 })}\ufeff`), // not at the start: not JSON
      signed('[]', claims({ exp: NOW + 9 })),
      signed('{"alg":"HS256","alg":"none"}', claims({ exp: NOW + 9 })),
      signed('{"alg":"none","alg":"HS256"}', claims({ exp: NOW + 9 })),
      signed('{"alg":"HS256"}', claims({ exp: NOW + 9 })).replace(/\.[^.]*$/, '.'), // signature stripped
      `${b64('{"alg":"none"}')}.${b64(claims({ exp: NOW + 9 }))}.`,
      `${signed('{"alg":"HS256"}', claims({ exp: NOW + 9 }))}==`,
      `${signed('{"alg":"HS256"}', claims({ exp: NOW + 9 }))}.`,
      '',
      '..',
      'a.b.c',
    ];
    for (const token of cases) await expectSameVerdict(token, checks);
    // And the valid one is accepted by both.
    const valid = signed('{"alg":"HS256"}', claims({ exp: NOW + 9 }));
    expect(verifyHs256(valid, [SECRET], checks, NOW)).toEqual(await viaJose(valid, checks));
    expect(verifyHs256(valid, [SECRET], checks, NOW)).toMatchObject({ exp: NOW + 9 });
    // Claims that are not UTF-8 are not decided here (jose reads them with U+FFFD in their place).
    const claimsText = claims({ exp: NOW + 9, x: '~' });
    const notUtf8 = Buffer.from(claimsText);
    notUtf8[claimsText.indexOf('~')] = 0xff;
    expect(verifyHs256(signed('{"alg":"HS256"}', notUtf8), [SECRET], checks, NOW)).toBeUndefined();
    expect(verifyHs256(signed('{"alg":"HS256"}', Buffer.from(claimsText)), [SECRET], checks, NOW)).toMatchObject({
      x: '~',
    });
  });
});
