export const packageName = '@workbay/manager';
