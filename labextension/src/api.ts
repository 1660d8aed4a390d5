/**
 * Calls to the server extension under `<base_url>grader/` (see LAB_CONTRACT.md): Lab's own
 * ServerConnection, so XSRF and auth are as for every other Lab request. The browser never holds a
 * service token.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** A refusal from the service (or the server extension), carrying its message unchanged. */
export class GraderError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly body: { [key: string]: any } = {}
  ) {
    super(message);
  }
}

const settings = (): ServerConnection.ISettings =>
  ServerConnection.makeSettings();

/** The URL of a path under the extension's prefix, for links, iframes and EventSource. */
export function graderUrl(path: string, query?: { [key: string]: string }): string {
  const url = URLExt.join(settings().baseUrl, 'grader', path);
  return query ? url + URLExt.objectToQueryString(query) : url;
}

/** JSON from `grader/<path>`; GraderError with the service's message on any refusal. */
export async function request<T = any>(
  path: string,
  init: RequestInit = {},
  query?: { [key: string]: string }
): Promise<T> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(
      graderUrl(path, query),
      init,
      settings()
    );
  } catch (error) {
    throw new GraderError(
      `The Jupyter server cannot be reached: ${(error as Error).message}`,
      0
    );
  }
  if (response.status === 204) {
    return undefined as T;
  }
  const text = await response.text();
  const json = (response.headers.get('Content-Type') || '').includes('json');
  let body: any = json ? undefined : text;
  if (json && text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
  }
  if (!response.ok) {
    const message =
      (body && typeof body === 'object' && typeof body.message === 'string' && body.message) ||
      `${response.status} ${response.statusText || 'error'}`;
    throw new GraderError(
      message,
      response.status,
      body && typeof body === 'object' ? body : {}
    );
  }
  return body as T;
}

export const get = <T = any>(path: string, query?: { [key: string]: string }) =>
  request<T>(path, { method: 'GET' }, query);

export const send = <T = any>(method: string, path: string, body: unknown = {}) =>
  request<T>(path, { method, body: JSON.stringify(body) });

/** The message to show for anything thrown by a call. */
export function messageOf(error: unknown): string {
  if (error instanceof GraderError) {
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}

export function assignmentPath(lecture: string, assignment: string): string {
  return `lectures/${encodeURIComponent(lecture)}/assignments/${encodeURIComponent(assignment)}`;
}
