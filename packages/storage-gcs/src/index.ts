export const packageName = '@workbay/storage-gcs';
