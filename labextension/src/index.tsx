/**
 * grader-labextension: the Grader panel (launcher card and main menu "Grader"), a Submit button in
 * fetched notebooks, feedback in sandboxed tabs, and a notification when a grading finishes while
 * the panel is closed.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { IMainMenu } from '@jupyterlab/mainmenu';
import { Menu } from '@lumino/widgets';
import { notifyError } from './actions';
import { openFeedback } from './feedback';
import { formatScore, ISubmission } from './model';
import { GraderPanel } from './panel';
import { SubmitButtonExtension } from './toolbar';
import { SubmissionWatcher } from './watcher';

const OPEN = 'grader:open';

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'grader-labextension:plugin',
  description: 'Submit with live status, and course management, for grader-service',
  autoStart: true,
  optional: [ILauncher, IMainMenu],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    mainMenu: IMainMenu | null
  ) => {
    const watcher = new SubmissionWatcher();
    let panel: MainAreaWidget<GraderPanel> | null = null;

    const showFeedback = (submission: ISubmission) =>
      openFeedback(submission, widget => app.shell.add(widget, 'main')).catch(
        notifyError
      );

    app.commands.addCommand(OPEN, {
      label: 'Grader',
      caption: 'Assignments, submissions and course management',
      execute: () => {
        if (!panel || panel.isDisposed) {
          const content = new GraderPanel({ app, watcher, openFeedback: showFeedback });
          panel = new MainAreaWidget({ content });
          panel.id = 'grader-panel';
          panel.title.label = 'Grader';
          panel.title.closable = true;
        }
        if (!panel.isAttached) {
          app.shell.add(panel, 'main');
        }
        app.shell.activateById(panel.id);
      }
    });

    if (launcher) {
      launcher.add({ command: OPEN, category: 'Other', rank: 0 });
    }
    if (mainMenu) {
      const menu = new Menu({ commands: app.commands });
      menu.title.label = 'Grader';
      menu.addItem({ command: OPEN });
      mainMenu.addMenu(menu, true, { rank: 90 });
    }

    app.docRegistry.addWidgetExtension(
      'Notebook',
      new SubmitButtonExtension(app, watcher)
    );

    // A grading that finishes while the panel is not shown: say so in a Lab notification.
    watcher.finished.connect((_, submission) => {
      if (panel && !panel.isDisposed && panel.isVisible) {
        return;
      }
      const what = `${submission.assignment} #${submission.id}`;
      const actions = [{ label: 'Open Grader', callback: () => app.commands.execute(OPEN) }];
      if (submission.auto_status === 'failed') {
        Notification.error(`Grading of ${what} failed.`, { actions, autoClose: false });
      } else {
        const score =
          submission.score == null
            ? 'results not released yet'
            : formatScore(submission.score, submission.max_score);
        Notification.success(`${what} graded: ${score}`, { actions, autoClose: 10000 });
      }
    });
  }
};

export default plugin;
