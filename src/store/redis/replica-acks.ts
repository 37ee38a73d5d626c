/**
 * In Redis Cluster an append is acknowledged once a replica of its master has it too
 * (docs/scaling.md, "Redis Cluster"): replication is asynchronous, and a master killed right
 * after answering would take the event with it when its replica is promoted.
 *
 * `WAIT 1 <ms>` covers every write sent before it on the same connection, and blocks that
 * connection meanwhile; one per append would let a node's connection to a master carry one
 * append per replica round trip. So each master's connection has at most one WAIT in flight:
 * appends answered meanwhile join the next one, which covers them all (their replies came
 * before it was sent). The WAIT goes on the connection the append ran on only if the slot's
 * master is the same before and after the append; if it changed (a failover, `MOVED`), the
 * append fails with a clear error: it may be stored or not, never acknowledged and lost.
 *
 * Appends to one master are acknowledged in the order their replies came, which is id order per
 * sandbox (the store's listener must see them so): an append whose slot has no replica in the
 * map (none configured, or one in its first sync, which the map can show and hide from one
 * refresh to the next) still waits behind the WAIT in flight, but not for a replica of its own.
 */
import { type ClusterWithScripts, masterConnection } from './connection.js';
import { slotOf } from './slots.js';

interface Waiter {
  resolve: () => void;
  reject: (error: Error) => void;
  /** False for an append whose slot had no replica in the map: it only keeps its place. */
  needsReplica: boolean;
}

interface MasterAcks {
  /** Appends answered since the WAIT in flight was sent. */
  next: Waiter[];
  inFlight: boolean;
}

export class ReplicaAcks {
  private readonly masters = new Map<string, MasterAcks>();

  constructor(
    private readonly cluster: ClusterWithScripts,
    private readonly timeoutMs: number,
  ) {}

  /** Runs the append script on the slot's master, then waits for a replica; resolves to the id. */
  async append(stream: string, meta: string, args: string[]): Promise<string> {
    const slot = slotOf(stream);
    const before = this.cluster.slots[slot]?.[0];
    const [id] = await this.cluster.seAppend(2, stream, meta, ...args);
    const entry = this.cluster.slots[slot];
    const master = entry?.[0];
    if (master === undefined || master !== before) {
      throw new Error(
        'the slot of this sandbox changed master during the append: the event may or may not be kept; publish it again to be sure',
      );
    }
    // No replica in the slot map (none configured, or one still in its first sync): no wait
    // for one, only for the appends answered before it.
    const needsReplica = entry!.length > 1;
    if (needsReplica || this.masters.has(master)) await this.acked(master, needsReplica);
    return id;
  }

  private acked(master: string, needsReplica: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      let acks = this.masters.get(master);
      if (acks === undefined) this.masters.set(master, (acks = { next: [], inFlight: false }));
      acks.next.push({ resolve, reject, needsReplica });
      if (!acks.inFlight) this.flush(master, acks);
    });
  }

  private flush(master: string, acks: MasterAcks): void {
    const waiters = acks.next;
    acks.next = [];
    if (!waiters.some((waiter) => waiter.needsReplica)) {
      settle(waiters, undefined);
      this.done(master, acks);
      return;
    }
    const node = masterConnection(this.cluster, master);
    if (node === undefined) {
      settle(waiters, new Error(`no connection to ${master} to wait for its replica`));
      this.masters.delete(master);
      return;
    }
    acks.inFlight = true;
    node.call('WAIT', '1', String(this.timeoutMs)).then(
      (count) => {
        settle(
          waiters,
          Number(count) >= 1
            ? undefined
            : new Error(
                `no replica confirmed the event within ${this.timeoutMs} ms: it may be lost if its master fails now; publish it again to be sure`,
              ),
        );
        this.done(master, acks);
      },
      (error: unknown) => {
        settle(waiters, error instanceof Error ? error : new Error(String(error)));
        this.done(master, acks);
      },
    );
  }

  private done(master: string, acks: MasterAcks): void {
    acks.inFlight = false;
    if (acks.next.length > 0) this.flush(master, acks);
    else this.masters.delete(master);
  }
}

/** In order: each waiter resolves, but one that needs a replica is rejected when `failure` is set. */
function settle(waiters: Waiter[], failure: Error | undefined): void {
  for (const waiter of waiters) {
    if (failure !== undefined && waiter.needsReplica) waiter.reject(failure);
    else waiter.resolve();
  }
}
