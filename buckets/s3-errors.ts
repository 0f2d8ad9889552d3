/**
 * S3's errors as S3 clients expect them: an HTTP status and an XML body
 * `<Error><Code>…</Code><Message>…</Message>…</Error>` (HEAD answers carry no body).
 * The codes are S3's own (the AWS CLI, rclone, s3cmd and the SDK branch on them), so the
 * listener speaks these instead of the recorder's RecorderError codes; an unexpected
 * fault becomes `InternalError` and is logged once by the listener (buckets/s3-server.ts).
 */

const STATUS = {
  AccessDenied: 403,
  BadDigest: 400,
  BucketAlreadyExists: 409,
  BucketAlreadyOwnedByYou: 409,
  BucketNotEmpty: 409,
  EntityTooLarge: 400,
  EntityTooSmall: 400,
  ExpiredToken: 400,
  IncompleteBody: 400,
  InternalError: 500,
  InvalidAccessKeyId: 403,
  InvalidArgument: 400,
  InvalidBucketName: 400,
  InvalidDigest: 400,
  InvalidLocationConstraint: 400,
  InvalidPart: 400,
  InvalidPartOrder: 400,
  InvalidRange: 416,
  InvalidURI: 400,
  InvalidRequest: 400,
  KeyTooLongError: 400,
  MalformedXML: 400,
  MethodNotAllowed: 405,
  MissingContentLength: 411,
  NoSuchBucket: 404,
  NoSuchKey: 404,
  NoSuchUpload: 404,
  NoSuchVersion: 404,
  NoSuchLifecycleConfiguration: 404,
  NotImplemented: 501,
  PreconditionFailed: 412,
  RequestTimeTooSkewed: 403,
  RequestTimeout: 400,
  ServiceUnavailable: 503,
  SignatureDoesNotMatch: 403,
  XAmzContentSHA256Mismatch: 400,
  XAmzContentChecksumMismatch: 400,
  AuthorizationHeaderMalformed: 400,
  AuthorizationQueryParametersError: 400,
  InsufficientStorage: 507,
} as const;

export type S3ErrorCode = keyof typeof STATUS;

export class S3Error extends Error {
  readonly status: number;
  constructor(
    readonly code: S3ErrorCode,
    message: string,
    /** Extra elements of the XML body (BucketName, Key, …). */
    readonly extra: Record<string, string> = {},
    /** Headers the answer carries (x-amz-delete-marker, x-amz-version-id). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'S3Error';
    this.status = STATUS[code];
  }
}

/** The XML body of an error (no namespace, as S3 sends it); built here so buckets/xml.ts may throw S3Error. */
export function s3ErrorXml(err: S3Error, resource: string, requestId: string): string {
  const fields = { Code: err.code, Message: err.message, ...err.extra, Resource: resource, RequestId: requestId };
  const esc = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error>${Object.entries(fields)
    .map(([k, v]) => `<${k}>${esc(v)}</${k}>`)
    .join('')}</Error>`;
}
