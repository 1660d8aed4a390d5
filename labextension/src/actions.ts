/**
 * Fetch and submit, shared by the assignment view and the notebook toolbar button: each asks
 * before anything is lost or spent, and shows the service's message when it refuses.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { Dialog, Notification, showDialog } from '@jupyterlab/apputils';
import { DocumentWidget } from '@jupyterlab/docregistry';
import { assignmentPath, GraderError, get, messageOf, send } from './api';
import { IAssignment, ISubmission, submitCheck } from './model';
import { SubmissionWatcher } from './watcher';

export interface IFetched {
  path: string;
  files: string[];
  backup: string | null;
}

/** Where a fetched assignment lives in the user's files. */
export const folderOf = (a: IAssignment) => `${a.lecture}/${a.name}`;

/** Whether `<lecture>/<assignment>/` exists in the user's files. */
export async function isFetched(
  app: JupyterFrontEnd,
  assignment: IAssignment
): Promise<boolean> {
  try {
    await app.serviceManager.contents.get(folderOf(assignment), {
      content: false
    });
    return true;
  } catch {
    return false;
  }
}

/**
 * Fetch the student version; when local files differ, list them and ask before replacing them
 * (the server keeps a backup of what it replaces).
 */
export async function fetchAssignment(
  assignment: IAssignment
): Promise<IFetched | null> {
  const path = `${assignmentPath(assignment.lecture, assignment.name)}/fetch`;
  try {
    return await send<IFetched>('POST', path, { overwrite: false });
  } catch (error) {
    if (!(error instanceof GraderError) || error.status !== 409) {
      throw error;
    }
    const changed: string[] = error.body.changed || [];
    const answer = await showDialog({
      title: 'Replace your changed files?',
      body:
        `${error.message}\n\nChanged: ${changed.join(', ') || '(unknown)'}\n\n` +
        'They are copied to a backup folder first.',
      buttons: [
        Dialog.cancelButton({ label: 'Keep my files' }),
        Dialog.warnButton({ label: 'Back up and replace' })
      ]
    });
    if (!answer.button.accept) {
      return null;
    }
    return await send<IFetched>('POST', path, { overwrite: true });
  }
}

/** Save every open, changed document under the assignment's folder. */
async function saveOpenDocuments(
  app: JupyterFrontEnd,
  folder: string
): Promise<void> {
  const saves: Promise<void>[] = [];
  for (const widget of Array.from(app.shell.widgets('main'))) {
    if (!(widget instanceof DocumentWidget)) {
      continue;
    }
    const context = widget.context;
    if (context.path.startsWith(folder + '/') && context.model.dirty) {
      saves.push(context.save());
    }
  }
  await Promise.all(saves);
}

/**
 * Save, confirm when late or the last allowed submission, submit, and watch it. Null when the
 * student cancelled or the panel's own check refused (the reason is shown).
 */
export async function submitAssignment(
  app: JupyterFrontEnd,
  watcher: SubmissionWatcher,
  assignment: IAssignment,
  role: string | null | undefined
): Promise<ISubmission | null> {
  const check = submitCheck(assignment, Date.now(), { fetched: true, role });
  if (!check.allowed) {
    Notification.warning(check.reason || 'Submitting is not allowed.', {
      autoClose: 5000
    });
    return null;
  }
  if (check.confirm) {
    const answer = await showDialog({
      title: 'Submit?',
      body: check.confirm,
      buttons: [
        Dialog.cancelButton(),
        Dialog.okButton({ label: 'Submit' })
      ]
    });
    if (!answer.button.accept) {
      return null;
    }
  }
  await saveOpenDocuments(app, folderOf(assignment));
  const submission = await send<ISubmission>(
    'POST',
    `${assignmentPath(assignment.lecture, assignment.name)}/submissions`,
    { path: folderOf(assignment) }
  );
  watcher.watch(submission);
  return submission;
}

/** The assignment as the service has it now (with submissions_used). */
export async function reloadAssignment(
  assignment: IAssignment
): Promise<IAssignment> {
  const list = await get<{ items: IAssignment[] }>(
    `lectures/${encodeURIComponent(assignment.lecture)}/assignments`
  );
  return list.items.find(a => a.name === assignment.name) || assignment;
}

export function notifyError(error: unknown): void {
  Notification.error(messageOf(error), { autoClose: false });
}
