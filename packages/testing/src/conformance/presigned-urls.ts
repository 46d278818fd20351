// Conformance group 'presigned URLs': GET and PUT URLs work over plain HTTP, expire, and are bound to their method
// and object; or, per the backend's capabilities, only their shape is checked, or the method must be absent.
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RemoteStorage } from '@workbay/api';
import { describe, expect, it } from 'vitest';
import { digestStream, readAll, sha256Of } from '../data.js';
import type { ConformanceContext } from './context.js';
import { body } from './context.js';

export function describePresignedUrls(ctx: ConformanceContext): void {
  describe('presigned URLs', () => {
    const presign = (...args: Parameters<NonNullable<RemoteStorage['presignedUrl']>>): Promise<string> => {
      const { storage, name } = ctx;
      if (!storage.presignedUrl) throw new Error(`${name} declares presigned URLs but has no presignedUrl method`);
      return storage.presignedUrl(...args);
    };
    // The capabilities are known when the suite is declared: they choose which tests exist.
    const { presignedUrls, presignedFetch, presignedFetchReason } = ctx.capabilities;
    if (!presignedUrls) {
      it('declares no presigned URLs, and has no presignedUrl method', () => {
        const { storage } = ctx;
        expect(storage.presignedUrl).toBeUndefined();
      });
    } else if (presignedFetch) {
      it('a presigned GET URL downloads the object over plain HTTP', async () => {
        const { storage, bucket } = ctx;
        const data = randomBytes(300 * 1024);
        await storage.upload(bucket, 'ps/get me.bin', body(data));
        const url = await presign('GET', bucket, 'ps/get me.bin', { expiresInSeconds: 60 });
        expect(url).toMatch(/^https?:\/\//);
        const res = await fetch(url);
        expect(res.status).toBe(200);
        expect(sha256Of(Buffer.from(await res.arrayBuffer()))).toBe(sha256Of(data));
      });

      it('a presigned PUT URL uploads an object over plain HTTP', async () => {
        const { storage, bucket } = ctx;
        const data = randomBytes(200 * 1024);
        const url = await presign('PUT', bucket, 'ps/put.bin', { expiresInSeconds: 60 });
        const res = await fetch(url, { method: 'PUT', body: data });
        expect(res.ok, `PUT answered ${res.status}: ${await res.clone().text()}`).toBe(true);
        await res.arrayBuffer();
        const back = await digestStream(await storage.download(bucket, 'ps/put.bin'));
        expect(back).toEqual({ digest: sha256Of(data), size: data.length });
      });

      it('a presigned URL stops working after it expires', async () => {
        const { storage, bucket } = ctx;
        await storage.upload(bucket, 'ps/expiring', body('soon gone'));
        const url = await presign('GET', bucket, 'ps/expiring', { expiresInSeconds: 1 });
        const putUrl = await presign('PUT', bucket, 'ps/expiring', { expiresInSeconds: 1 });
        await sleep(2_100);
        const res = await fetch(url);
        await res.arrayBuffer();
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        const put = await fetch(putUrl, { method: 'PUT', body: 'overwritten' });
        await put.arrayBuffer();
        expect(put.status).toBeGreaterThanOrEqual(400);
        expect((await readAll(await storage.download(bucket, 'ps/expiring'))).toString()).toBe('soon gone');
      });

      it('a presigned URL is bound to its method: a GET URL refuses PUT, a PUT URL reads nothing', async () => {
        const { storage, bucket } = ctx;
        await storage.upload(bucket, 'ps/method', body('original'));
        const getUrl = await presign('GET', bucket, 'ps/method', { expiresInSeconds: 60 });
        const put = await fetch(getUrl, { method: 'PUT', body: 'overwritten through a download URL' });
        await put.arrayBuffer();
        expect(put.status, 'a download URL accepted an upload').toBeGreaterThanOrEqual(400);
        const putUrl = await presign('PUT', bucket, 'ps/method', { expiresInSeconds: 60 });
        const get = await fetch(putUrl);
        const got = await get.text();
        expect(get.ok && got === 'original', 'an upload URL served the object').toBe(false);
        expect((await readAll(await storage.download(bucket, 'ps/method'))).toString()).toBe('original');
      });

      it('a presigned URL is bound to its object', async () => {
        const { storage, bucket } = ctx;
        await storage.upload(bucket, 'ps/a', body('a'));
        await storage.upload(bucket, 'ps/b', body('b'));
        const url = await presign('GET', bucket, 'ps/a', { expiresInSeconds: 60 });
        // Point the signed URL at another object; an opaque token that names no object is bound by design.
        const tampered = url.replace(/ps(\/|%2F)a(?=$|[?&#])/i, 'ps$1b');
        if (tampered !== url) {
          const res = await fetch(tampered);
          await res.arrayBuffer();
          expect(res.status).toBeGreaterThanOrEqual(400);
        }
        const res = await fetch(url);
        expect(await res.text()).toBe('a');
      });
    } else {
      it(`presigned URLs are well formed (fetch not checked: ${presignedFetchReason ?? 'the server cannot verify signatures'})`, async () => {
        const { storage, bucket } = ctx;
        await storage.upload(bucket, 'ps/shape', body('x'));
        for (const method of ['GET', 'PUT'] as const) {
          const url = new URL(await presign(method, bucket, 'ps/shape', { expiresInSeconds: 60 }));
          expect(url.protocol).toMatch(/^https?:$/);
          expect(decodeURIComponent(url.pathname + url.hostname)).toContain('ps/shape');
          expect(url.search.length).toBeGreaterThan(0);
        }
      });
    }
  });
}
