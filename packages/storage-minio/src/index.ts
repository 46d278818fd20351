export const packageName = '@workbay/storage-minio';
