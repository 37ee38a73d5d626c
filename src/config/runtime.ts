import { readFileSync } from 'node:fs';
import type { VerifierConfig } from '../auth/verifier.js';
import type { Limits } from '../config.js';
import { SandboxEventsError } from '../errors.js';
import type { RetentionPolicy } from '../store/types.js';
import type { Settings } from './settings.js';

/**
 * What the settings become in the running daemon: the same functions build it at start and at
 * every reload, so a reloaded value means what it meant at start.
 */

export function limitsFor(settings: Settings): Partial<Limits> {
  return {
    maxClients: settings.maxClients,
    maxOutputBytes: settings.maxOutputBuffer,
    maxOutputTotalBytes: settings.maxOutputTotal,
    maxEventBytes: settings.maxEventSize,
    publishRatePerSecond: settings.publishRate,
    publishBurst: settings.publishBurst,
    tcpKeepAliveMs: settings.tcpKeepalive * 1000,
  };
}

export function retentionFor(settings: Settings): RetentionPolicy {
  return {
    maxCount: settings.retentionCount,
    maxAgeMs: settings.retentionAge,
    maxBytes: settings.retentionBytes,
    ephemeralTypes: settings.ephemeralTypes,
    rules: settings.retention,
  };
}

/**
 * The verifier's configuration, with the public key file read; undefined when no key source is
 * configured (the daemon then uses its development secret). Every key source given goes to
 * the verifier: a secret may sit beside a public key or a JWKS (HS256 tokens and the others),
 * and the verifier refuses a public key with a JWKS.
 */
export function keySourcesFor(settings: Settings): VerifierConfig | undefined {
  const auth: VerifierConfig = { issuer: settings.jwtIssuer, audience: settings.jwtAudience };
  if (settings.jwtPublicKey !== undefined) {
    try {
      auth.publicKeyPem = readFileSync(settings.jwtPublicKey, 'utf8');
    } catch (cause) {
      throw new SandboxEventsError('AUTH_CONFIG', `cannot read the public key ${settings.jwtPublicKey}`, { cause });
    }
  }
  if (settings.jwksUrl !== undefined) auth.jwksUrl = settings.jwksUrl;
  if (settings.jwtSecret !== undefined) auth.secret = settings.jwtSecret;
  if (auth.publicKeyPem === undefined && auth.jwksUrl === undefined && auth.secret === undefined) return undefined;
  return auth;
}
