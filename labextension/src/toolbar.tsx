/**
 * The Submit button in the toolbar of a fetched notebook (`<lecture>/<assignment>/...`): saves,
 * confirms when needed, submits the assignment's folder and shows queued → running → score live.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ReactWidget } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { INotebookModel, NotebookPanel } from '@jupyterlab/notebook';
import { IDisposable } from '@lumino/disposable';
import React, { useEffect, useState } from 'react';
import { notifyError, reloadAssignment, submitAssignment } from './actions';
import { get, messageOf } from './api';
import { IAssignment, ILecture, ISubmission, statusLabel, submitCheck } from './model';
import { SubmissionWatcher } from './watcher';

/** `<lecture>/<assignment>` of a path inside a fetched assignment, or null. */
export function assignmentOfPath(path: string): [string, string] | null {
  const parts = path.split('/');
  return parts.length >= 3 && parts[0] && parts[1] ? [parts[0], parts[1]] : null;
}

function SubmitControl(props: {
  app: JupyterFrontEnd;
  watcher: SubmissionWatcher;
  initial: IAssignment;
  role: string | null | undefined;
}): JSX.Element {
  const [assignment, setAssignment] = useState(props.initial);
  const [latest, setLatest] = useState<ISubmission | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    const onChange = (_: unknown, s: ISubmission) => {
      setLatest(current => (current && current.id === s.id ? { ...current, ...s } : current));
    };
    const onFinished = (_: unknown, s: ISubmission) => {
      if (s.lecture === assignment.lecture && s.assignment === assignment.name) {
        void reloadAssignment(assignment).then(setAssignment);
      }
    };
    props.watcher.changed.connect(onChange);
    props.watcher.finished.connect(onFinished);
    return () => {
      props.watcher.changed.disconnect(onChange);
      props.watcher.finished.disconnect(onFinished);
    };
  }, []);
  const check = submitCheck(assignment, Date.now(), {
    fetched: true,
    busy,
    role: props.role
  });
  const onClick = async () => {
    setBusy(true);
    try {
      const submission = await submitAssignment(props.app, props.watcher, assignment, props.role);
      if (submission) {
        setLatest(props.watcher.current(submission.id) || submission);
        setAssignment(await reloadAssignment(assignment));
      }
    } catch (error) {
      notifyError(error);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="jp-grader-toolbar">
      <button
        type="button"
        className="jp-ToolbarButtonComponent jp-Button jp-mod-minimal jp-grader-submit"
        onClick={onClick}
        disabled={!check.allowed}
        title={check.allowed ? `Submit ${assignment.name} for grading` : check.reason || ''}
        aria-label={`Submit ${assignment.name}`}
      >
        <span className="jp-ToolbarButtonComponent-label">Submit</span>
      </button>
      <span
        className="jp-grader-toolbar-status"
        aria-live="polite"
        data-submission={latest?.id}
        data-status={latest?.auto_status}
      >
        {latest ? statusLabel(latest) : !check.allowed ? check.reason : ''}
      </span>
    </div>
  );
}

export class SubmitButtonExtension
  implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel>
{
  private _lectures: Promise<ILecture[]> | null = null;

  constructor(
    private _app: JupyterFrontEnd,
    private _watcher: SubmissionWatcher
  ) {}

  createNew(panel: NotebookPanel): IDisposable {
    const found = assignmentOfPath(panel.context.path);
    const widget = ReactWidget.create(<span />);
    if (found) {
      void this._attach(panel, found).catch(error =>
        console.warn(`grader: no Submit button: ${messageOf(error)}`)
      );
    }
    return widget;
  }

  private async _attach(panel: NotebookPanel, [code, name]: [string, string]): Promise<void> {
    if (this._lectures === null) {
      this._lectures = get<{ items: ILecture[] }>('lectures').then(r => r.items);
      this._lectures.catch(() => (this._lectures = null));
    }
    const lecture = (await this._lectures).find(l => l.code === code);
    if (!lecture) {
      return;
    }
    const list = await get<{ items: IAssignment[] }>(
      `lectures/${encodeURIComponent(code)}/assignments`
    );
    const assignment = list.items.find(a => a.name === name);
    if (!assignment || panel.isDisposed) {
      return;
    }
    const control = ReactWidget.create(
      <SubmitControl
        app={this._app}
        watcher={this._watcher}
        initial={assignment}
        role={lecture.role}
      />
    );
    panel.toolbar.insertItem(10, 'grader-submit', control);
  }
}
