export const packageName = '@workbay/daemon';
