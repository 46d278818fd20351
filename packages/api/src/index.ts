export const packageName = '@workbay/api';
