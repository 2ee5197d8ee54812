using Modular.Server.Cli;

return await ServerCli.RunAsync(args);
