import type { Principal } from '../auth/principal.js';
import { Publication } from '../broker/publisher.js';
import {
  type ChannelTarget,
  type PatternScope,
  resolveChannel,
  resolvePatternScope,
  resolveSandbox,
} from '../broker/scope.js';
import type { ReplySlot, RespClient } from './client.js';
import { readPublishPayload, type StoredEvent } from '../event/event.js';
import {
  array,
  bulk,
  bulkArray,
  errorReply,
  integer,
  pipelinedInteger,
  subscriptionConfirmation,
} from '../protocol/encode.js';
import { compileGlob } from '../protocol/glob.js';
import type { DecodedCommand } from '../protocol/request-decoder.js';
import type { SandboxRef } from '../store/types.js';
import { type CommandSpec, ReplyError, table } from './command.js';
import { errorText } from './errors.js';

const SUBSCRIBE = bulk('subscribe');
const UNSUBSCRIBE = bulk('unsubscribe');
const PSUBSCRIBE = bulk('psubscribe');
const PUNSUBSCRIBE = bulk('punsubscribe');

function principalOf(connection: RespClient): Principal {
  // The dispatcher refuses every command here before AUTH (NOAUTH), so this always holds.
  return connection.principal!;
}

/** `*3 <kind> <name> <count>`, a push in RESP3: how Redis confirms (un)subscriptions. */
function confirmation(connection: RespClient, kind: Buffer, name: string | undefined): Buffer {
  return subscriptionConfirmation(connection.protocol, kind, name, connection.subscriptionCount);
}

function checkSubscriptionLimit(connection: RespClient, adding: number): void {
  const limit = connection.context.limits.maxSubscriptionsPerConnection;
  if (connection.subscriptionCount + adding > limit) {
    throw new ReplyError(
      'SUBSCRIPTION_LIMIT',
      `ERR subscription limit reached: at most ${limit} channels and patterns per connection`,
    );
  }
}

/**
 * Resolves every name first: like Redis's ACL check, one refused channel refuses the whole
 * command and nothing is subscribed.
 */
export function resolveForSubscribe(connection: RespClient, names: string[]): ChannelTarget[] {
  const principal = principalOf(connection);
  // A loop, not `names.map`: the arrays that map makes in its builtin and in optimized code
  // differ in elements kind, and a SUBSCRIBE optimized for one was deoptimized by the other
  // (docs/performance.md, "Ninth round: the first storm").
  const targets: ChannelTarget[] = [];
  for (const name of names) targets.push(resolveChannel(principal, name));
  checkSubscriptionLimit(connection, channelsNotHeld(connection, targets));
  return targets;
}

/** How many distinct channels among `targets` the connection does not hold yet. */
function channelsNotHeld(connection: RespClient, targets: ChannelTarget[]): number {
  const session = connection.session;
  // One name, what nearly every SUBSCRIBE carries: no set of keys to build.
  if (targets.length === 1) return session.channel(targets[0]!) === undefined ? 1 : 0;
  return new Set(targets.filter((target) => session.channel(target) === undefined).map((target) => target.key)).size;
}

/** Adds the subscriptions, without confirmations (the ComputeSDK client's line gets +OK). */
export function addSubscriptions(connection: RespClient, targets: ChannelTarget[]): void {
  for (const target of targets) connection.session.subscribe(target);
}

function subscribe(connection: RespClient, args: string[]): void {
  const targets = resolveForSubscribe(connection, args.slice(1));
  // Each confirmation carries the count right after its own subscription, as Redis's do.
  for (const target of targets) {
    connection.session.subscribe(target);
    connection.reply(confirmation(connection, SUBSCRIBE, target.displayName));
  }
}

function unsubscribe(connection: RespClient, args: string[]): void {
  const principal = principalOf(connection);
  const session = connection.session;
  if (args.length === 1) {
    if (session.channels.size === 0) {
      connection.reply(confirmation(connection, UNSUBSCRIBE, undefined));
      return;
    }
    // Newest first: for the two-channel case this is the order Redis 7 replies in.
    for (const subscription of [...session.channels.values()].reverse()) {
      session.unsubscribe(subscription);
      connection.reply(confirmation(connection, UNSUBSCRIBE, subscription.displayName));
    }
    return;
  }
  for (const name of args.slice(1)) {
    const target = targetIfResolvable(principal, name);
    if (target !== undefined) session.unsubscribe(target);
    connection.reply(confirmation(connection, UNSUBSCRIBE, name));
  }
}

function targetIfResolvable(principal: Principal, name: string): ChannelTarget | undefined {
  try {
    return resolveChannel(principal, name);
  } catch {
    return undefined; // a name this token can't reach can't be one of its subscriptions
  }
}

/** As resolveForSubscribe, for patterns: every scope resolved and the limit checked first. */
export function resolveForPsubscribe(connection: RespClient, patterns: string[]): PatternScope[] {
  const principal = principalOf(connection);
  const scopes = patterns.map((pattern) => resolvePatternScope(principal, pattern));
  const session = connection.session;
  checkSubscriptionLimit(connection, new Set(patterns.filter((pattern) => !session.patterns.has(pattern))).size);
  return scopes;
}

function psubscribe(connection: RespClient, args: string[]): void {
  const patterns = args.slice(1);
  const scopes = resolveForPsubscribe(connection, patterns);
  const session = connection.session;
  patterns.forEach((pattern, index) => {
    session.psubscribe(pattern, scopes[index]!);
    connection.reply(confirmation(connection, PSUBSCRIBE, pattern));
  });
}

function punsubscribe(connection: RespClient, args: string[]): void {
  const session = connection.session;
  if (args.length === 1) {
    if (session.patterns.size === 0) {
      connection.reply(confirmation(connection, PUNSUBSCRIBE, undefined));
      return;
    }
    for (const pattern of [...session.patterns.keys()].reverse()) {
      session.punsubscribe(pattern);
      connection.reply(confirmation(connection, PUNSUBSCRIBE, pattern));
    }
    return;
  }
  for (const pattern of args.slice(1)) {
    session.punsubscribe(pattern);
    connection.reply(confirmation(connection, PUNSUBSCRIBE, pattern));
  }
}

/**
 * PUBLISH's reply, and the publication itself (one object per PUBLISH). The store usually
 * answers while `publishWith` runs (memory store): the reply is then sent at once, in the
 * connection's order, without a slot; otherwise (SQLite's commit, the Redis engine) it takes a
 * slot and later PUBLISHes of the pipeline go ahead meanwhile.
 */
class PublishReply extends Publication {
  private answer: Buffer | undefined = undefined;
  private slot: ReplySlot | undefined = undefined;

  /**
   * The payload, `payload[start, end)`, is read into the publication itself (readPublishPayload):
   * it throws the payload's refusal, and the publication is then dropped unpublished.
   */
  constructor(
    private readonly connection: RespClient,
    target: SandboxRef,
    payload: Buffer,
    start: number,
    end: number,
  ) {
    super(target, '', payload, start, end);
    readPublishPayload(payload, connection.context.limits.maxEventBytes, start, end, this);
  }

  published(_event: StoredEvent, receivers: number): void {
    this.send(pipelinedInteger(receivers));
  }

  failed(error: unknown): void {
    this.send(errorReply(errorText(error, this.connection)));
  }

  private send(bytes: Buffer): void {
    if (this.slot !== undefined) this.slot.fill(bytes);
    else this.answer = bytes;
  }

  /** Called once publishWith returned: the answer, or a slot that waits for it. */
  replyOrWait(): void {
    if (this.answer !== undefined) this.connection.reply(this.answer);
    else this.slot = this.connection.replySlot();
  }
}

/** The last PUBLISH's principal, channel and sandbox: a publisher mostly repeats its channel. */
let lastPublisher: Principal | undefined;
let lastChannel = '';
let lastTarget: SandboxRef | undefined;

/**
 * resolveSandbox for PUBLISH, the last answer again for the same principal and channel (a
 * principal is not changed once its token is verified; the decoder hands out the same string
 * for a channel received again, which compares equal at once).
 */
function publishTarget(principal: Principal, channel: string): SandboxRef {
  if (principal === lastPublisher && channel === lastChannel && lastTarget !== undefined) return lastTarget;
  const target = resolveSandbox(principal, channel);
  lastPublisher = principal;
  lastChannel = channel;
  lastTarget = target;
  return target;
}

/** The event is taken as the bytes received (the decoder leaves it undecoded: lastArgumentAsBytes). */
function publish(connection: RespClient, args: string[], byteLengths: number[], command: DecodedCommand): void {
  const principal = principalOf(connection);
  const target = publishTarget(principal, args[1]!);
  const { lastBytes, lastStart } = command;
  let reply: PublishReply;
  if (lastBytes === undefined || lastStart === undefined) {
    const payload = Buffer.from(args[2]!);
    reply = new PublishReply(connection, target, payload, 0, payload.length);
  } else reply = new PublishReply(connection, target, lastBytes, lastStart, lastStart + byteLengths[2]!);
  connection.context.publisher.publishWith(principal, reply);
  reply.replyOrWait();
}

function pubsubChannels(connection: RespClient, args: string[]): void {
  const matches = args.length > 2 ? compileGlob(args[2]!) : undefined;
  const names = connection.context.broker.visibleChannels(principalOf(connection), matches);
  connection.reply(bulkArray(names));
}

function pubsubNumsub(connection: RespClient, args: string[]): void {
  const principal = principalOf(connection);
  const items: Buffer[] = [];
  for (const name of args.slice(2)) {
    const target = targetIfResolvable(principal, name);
    items.push(bulk(name), integer(target === undefined ? 0 : connection.context.broker.subscriberCount(target.key)));
  }
  connection.reply(array(items));
}

function pubsubNumpat(connection: RespClient): void {
  connection.reply(integer(connection.context.broker.patternCount(principalOf(connection))));
}

const pubsub = { group: 'pubsub', since: '2.0.0' } as const;

export const pubsubCommands: CommandSpec[] = [
  {
    ...pubsub,
    name: 'subscribe',
    arity: -2,
    whileSubscribed: true,
    summary: 'Listen for events of the given sandboxes',
    run: subscribe,
  },
  {
    ...pubsub,
    name: 'unsubscribe',
    arity: -1,
    whileSubscribed: true,
    summary: 'Stop listening for events of sandboxes',
    run: unsubscribe,
  },
  {
    ...pubsub,
    name: 'psubscribe',
    arity: -2,
    whileSubscribed: true,
    summary: 'Listen for events of sandboxes matching glob patterns',
    run: psubscribe,
  },
  {
    ...pubsub,
    name: 'punsubscribe',
    arity: -1,
    whileSubscribed: true,
    summary: 'Stop listening for events of sandboxes matching patterns',
    run: punsubscribe,
  },
  {
    ...pubsub,
    name: 'publish',
    arity: 3,
    lastArgumentAsBytes: true,
    summary: 'Store an event {"type","data"} and deliver it to subscribers',
    run: publish,
  },
  {
    ...pubsub,
    name: 'pubsub',
    arity: -2,
    summary: 'Inspect the pub/sub state visible to this token',
    subcommands: table([
      {
        ...pubsub,
        name: 'pubsub|channels',
        arity: -2,
        summary: 'Active channels, optionally matching a pattern',
        run: pubsubChannels,
      },
      { ...pubsub, name: 'pubsub|numsub', arity: -2, summary: 'Subscriber count of channels', run: pubsubNumsub },
      {
        ...pubsub,
        name: 'pubsub|numpat',
        arity: 2,
        summary: 'Count of unique pattern subscriptions',
        run: pubsubNumpat,
      },
    ]),
  },
];
