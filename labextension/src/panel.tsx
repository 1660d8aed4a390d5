/**
 * The Grader panel: a tab for students and, for users with a tutor or instructor role somewhere,
 * one for course management. It says plainly when the server is not configured or refuses.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { ReactWidget } from '@jupyterlab/apputils';
import React, { useEffect, useState } from 'react';
import { get, messageOf } from './api';
import { ErrorMessage } from './common';
import { InstructorView } from './instructor';
import { ILecture, ISubmission } from './model';
import { StudentView } from './student';
import { SubmissionWatcher } from './watcher';

export interface IConfig {
  url: string | null;
  user: { name: string; admin?: boolean; roles?: { [code: string]: string } } | null;
  configured: boolean;
  message: string | null;
}

interface IPanelProps {
  app: JupyterFrontEnd;
  watcher: SubmissionWatcher;
  openFeedback: (submission: ISubmission) => void;
}

function GraderApp(props: IPanelProps): JSX.Element {
  const [config, setConfig] = useState<IConfig | null>(null);
  const [lectures, setLectures] = useState<ILecture[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [tab, setTab] = useState<'student' | 'instructor'>('student');
  useEffect(() => {
    (async () => {
      const cfg = await get<IConfig>('config');
      setConfig(cfg);
      if (!cfg.configured || cfg.message) {
        return;
      }
      const list = await get<{ items: ILecture[] }>('lectures');
      setLectures(list.items);
    })().catch(e => setError(messageOf(e)));
  }, []);
  const staff = (lectures || []).some(
    l => l.role === 'tutor' || l.role === 'instructor'
  );
  return (
    <div className="jp-grader-panel">
      <header className="jp-grader-header">
        <h1>Grader</h1>
        {config?.user && (
          <span className="jp-grader-user">Signed in as {config.user.name}</span>
        )}
      </header>
      <ErrorMessage message={error || config?.message || null} />
      {!config && !error && <p>Loading…</p>}
      {staff && (
        <div className="jp-grader-tabs" role="tablist" aria-label="Grader views">
          {(['student', 'instructor'] as const).map(name => (
            <button
              key={name}
              type="button"
              role="tab"
              id={`jp-grader-tab-${name}`}
              aria-selected={tab === name}
              className={'jp-grader-tab' + (tab === name ? ' jp-mod-active' : '')}
              onClick={() => setTab(name)}
            >
              {name === 'student' ? 'Assignments' : 'Course management'}
            </button>
          ))}
        </div>
      )}
      {lectures && (tab === 'student' || !staff) && (
        <div role={staff ? 'tabpanel' : undefined} aria-labelledby={staff ? 'jp-grader-tab-student' : undefined}>
          <StudentView {...props} lectures={lectures} />
        </div>
      )}
      {lectures && staff && tab === 'instructor' && (
        <div role="tabpanel" aria-labelledby="jp-grader-tab-instructor">
          <InstructorView lectures={lectures} />
        </div>
      )}
    </div>
  );
}

export class GraderPanel extends ReactWidget {
  constructor(private _props: IPanelProps) {
    super();
    this.addClass('jp-grader');
    this.id = 'jp-grader-panel';
    this.title.label = 'Grader';
    this.title.closable = true;
  }

  render(): JSX.Element {
    return <GraderApp {...this._props} />;
  }
}
