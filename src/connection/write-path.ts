/**
 * The write path moved to the session layer (src/session/write-path.ts); this re-export keeps
 * the old import path working for the modules not yet moved over to it.
 */
export { destroyAfterGrace, type OutputStream, WritePath } from '../session/write-path.js';
