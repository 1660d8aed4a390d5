/**
 * Live status of submissions: one EventSource per watched submission on the server extension's
 * relay (`grader/events?submission=ID`), closed once the grading reached a final state.
 *
 * It lives as long as Lab does (not the panel), so a grading that finishes while the panel is
 * closed still ends in a Lab notification.
 */
import { Signal, ISignal } from '@lumino/signaling';
import { assignmentPath, get, graderUrl } from './api';
import { applyEvent, isFinal, IStatusEvent, ISubmission } from './model';

export class SubmissionWatcher {
  private _streams = new Map<number, EventSource>();
  private _latest = new Map<number, ISubmission>();
  private _changed = new Signal<this, ISubmission>(this);
  private _finished = new Signal<this, ISubmission>(this);

  /** Every status change of a watched submission. */
  get changed(): ISignal<this, ISubmission> {
    return this._changed;
  }

  /** A watched submission reached graded or failed (with its full record fetched again). */
  get finished(): ISignal<this, ISubmission> {
    return this._finished;
  }

  current(id: number): ISubmission | undefined {
    return this._latest.get(id);
  }

  isWatching(id: number): boolean {
    return this._streams.has(id);
  }

  watch(submission: ISubmission): void {
    this._latest.set(submission.id, submission);
    if (isFinal(submission.auto_status) || this._streams.has(submission.id)) {
      return;
    }
    const source = new EventSource(
      graderUrl('events', { submission: String(submission.id) })
    );
    this._streams.set(submission.id, source);
    source.addEventListener('status', message => {
      const event = JSON.parse((message as MessageEvent).data) as IStatusEvent;
      this._apply(event);
    });
  }

  stop(id: number): void {
    this._streams.get(id)?.close();
    this._streams.delete(id);
  }

  dispose(): void {
    for (const id of Array.from(this._streams.keys())) {
      this.stop(id);
    }
  }

  private _apply(event: IStatusEvent): void {
    const before = this._latest.get(event.submission);
    if (!before) {
      return;
    }
    const after = applyEvent(before, event);
    this._latest.set(after.id, after);
    this._changed.emit(after);
    if (isFinal(after.auto_status)) {
      this.stop(after.id);
      void this._finish(after);
    }
  }

  private async _finish(submission: ISubmission): Promise<void> {
    let full = submission;
    try {
      full = await get<ISubmission>(
        `${assignmentPath(submission.lecture, submission.assignment)}/submissions/${submission.id}`
      );
      this._latest.set(full.id, full);
      this._changed.emit(full);
    } catch {
      // the event's own fields are shown
    }
    this._finished.emit(full);
  }
}
