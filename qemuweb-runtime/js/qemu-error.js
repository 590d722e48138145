// The error type of QemuClient (qemuweb-runtime/src/client.rs makes every rejection and
// error it reports with it). @qemuweb/runtime exports this class; its declaration is in
// bindings/npm/runtime/index.d.ts.

/** A failure of a QemuClient command or VM: an `Error` with an `ErrorCode` as `code`. */
export class QemuError extends Error {
  /**
   * @param {string} code the ErrorCode
   * @param {string} message what to tell the user
   * @param {string | undefined} vmId the VM it is about
   * @param {number | undefined} requestId the request it answers
   * @param {unknown} cause what caused it (an abort's reason), if anything
   */
  constructor(code, message, vmId, requestId, cause) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'QemuError';
    this.code = code;
    if (vmId !== undefined) this.vmId = vmId;
    if (requestId !== undefined) this.requestId = requestId;
  }
}
