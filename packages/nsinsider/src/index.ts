export const packageName = '@workbay/nsinsider';
