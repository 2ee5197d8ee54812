using Modular.Server.Cli;

return await ServerCli.Build().Parse(args).InvokeAsync();
